# syntax=docker/dockerfile:1
# Onboard: onboard-server and onboardctl on a small Debian runtime.
#
#   docker build -t onboard:0.1.0 .
#
# The builder compiles both binaries in release mode against the Cargo.lock;
# the runtime has only the shared libraries they link (ldd: libssl3, libpq5,
# libsqlite3-0) and the CA certificates, and runs as the unprivileged user
# onboard (uid 10001). docs/deployment.md has the walk-through.

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libpq-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin onboard-server --bin onboardctl \
 && strip target/release/onboard-server target/release/onboardctl

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libpq5 libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 onboard \
 && useradd --system --uid 10001 --gid onboard --home-dir /var/lib/onboard --no-create-home \
      --shell /usr/sbin/nologin onboard \
 && install -d -o onboard -g onboard -m 0750 /var/lib/onboard
COPY --from=builder /src/target/release/onboard-server /src/target/release/onboardctl /usr/local/bin/
COPY onboard.example.toml /usr/share/doc/onboard/onboard.example.toml
# Relative paths in the settings (data/onboard.db, data/ca, ...) are under here.
WORKDIR /var/lib/onboard
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["onboard-server"]
