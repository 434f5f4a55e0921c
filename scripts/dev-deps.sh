#!/usr/bin/env bash
# Makes sure the C libraries and tools Onboard builds against are installed
# (Debian/Ubuntu: apt-get). Idempotent; installs only what is missing.
set -euo pipefail

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
pkg-config --exists libpq 2>/dev/null || need+=(libpq-dev)
pkg-config --exists sqlite3 2>/dev/null || need+=(libsqlite3-dev)
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -gt 0 ]; then
  echo "dev-deps: installing ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "dev-deps: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
