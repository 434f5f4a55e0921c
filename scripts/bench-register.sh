#!/usr/bin/env bash
# HTTP load run of CSR registration against the release server, on SQLite and on
# PostgreSQL: wrk, 2 threads, 16 connections, 20 s each, pre-generated P-256 CSRs
# and unique serials. Prints one RESULT line per backend; the figures go to
# docs/benchmarks.md. Only loopback addresses; the server and wrk share the 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${BENCH_DURATION:-20s}"
command -v wrk >/dev/null 2>&1 || { sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo; $sudo_cmd apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin onboard-server --bin onboardctl >&2
bin="$root/target/release"
work="$(mktemp -d)"
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

# 200 CSRs, JSON-escaped one per line.
for i in $(seq 1 200); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=bench-$i" 2>/dev/null | awk '{printf "%s\\n", $0} END {print ""}'
done >"$work/csrs.txt"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
run() {
  local name="$1" url="$2"
  local dir="$work/$name"; mkdir -p "$dir"; cd "$dir"
  export ONBOARD__DATABASE__URL="$url" ONBOARD__SERVER__BIND="127.0.0.1:$port" \
    ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE=0 ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR=0 \
    ONBOARD__LOG__LEVEL=warn
  "$bin/onboard-server" >server.log 2>&1 & server_pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/api/health" >/dev/null && break; sleep 0.1; done
  BENCH_KEY="$("$bin/onboardctl" --output json keys create --batch bench --max-uses 1000000 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["key"])')"
  export BENCH_KEY BENCH_CSRS="$work/csrs.txt"
  echo "== $name" >&2
  wrk -t2 -c16 -d"$duration" --latency -s "$root/bench/register.lua" "http://127.0.0.1:$port" \
    | tee "$dir/wrk.txt" | grep RESULT | sed "s/^RESULT/RESULT backend=$name/"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  cd "$root"
}

run sqlite "sqlite://$work/sqlite/onboard.db"
pg_admin="${ONBOARD_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="onboard_bench_$$"
psql "$pg_admin" -qc "CREATE DATABASE $db"
run postgres "${pg_admin%/*}/$db"
psql "$pg_admin" -qc "DROP DATABASE $db WITH (FORCE)"
