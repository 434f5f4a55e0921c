#!/usr/bin/env bash
# HTTP load runs of CSR registration against the release server, side by side with
# `cfssl serve` (Debian golang-cfssl) signing the same P-256 CSRs with a P-256 CA:
# for each configuration (SQLite / PostgreSQL, broker `none` / `mosquitto-file`,
# an empty registry and one holding BENCH_FLEET devices), Onboard is loaded with
# wrk, then cfssl right after it for the same time, and the ratio printed.
# Pre-generated distinct P-256 CSRs, a unique serial per request, rate limits off.
# Prints one RESULT line per run; the figures go to docs/benchmarks.md. Only
# loopback addresses; the servers and wrk share the machine's cores.
#
# Then server-side key generation (no CSR; SQLite, broker `none`): P-256 for
# BENCH_DURATION, and RSA-2048 beside the raw RSA-2048 key generation rate on the
# same cores (`crates/pki/examples/rsa-keygen-rate.rs`: BENCH_RSA_KEYS keys on 2
# threads, before and after the server's run, which lasts as long as the first
# raw run took), with the ratio of the rates and the ratio of the CPU time per
# key (the server's, from /proc, per registration), which a machine shared with
# others' work disturbs less.
#
# BENCH_DURATION (default 10s), BENCH_CONNECTIONS (8), BENCH_FLEET (100000; 0 skips
# the runs on a filled registry), BENCH_BACKENDS ("sqlite postgres"),
# BENCH_BROKERS ("none mosquitto-file"), BENCH_CSR (1; 0 skips the CSR runs and
# cfssl), BENCH_KEYGEN (1; 0 skips the key generation runs), BENCH_RSA_KEYS (200),
# BENCH_HALF (1: after each CSR run, one at about half its rate, for the latency
# there; 0 skips it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
duration="${BENCH_DURATION:-10s}"
connections="${BENCH_CONNECTIONS:-8}"
fleet="${BENCH_FLEET:-100000}"
backends="${BENCH_BACKENDS:-sqlite postgres}"
brokers="${BENCH_BROKERS:-none mosquitto-file}"
for tool in wrk cfssl; do
  command -v "$tool" >/dev/null 2>&1 && continue
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get install -y -qq wrk golang-cfssl >/dev/null
done
cargo build --release --bin onboard-server --bin onboardctl >&2
[ "${BENCH_KEYGEN:-1}" = 1 ] && cargo build --release -p onboard-pki --example rsa-keygen-rate >&2
bin="$root/target/release"
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}
wait_tcp() {
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}
rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck="$(getconf CLK_TCK)"

# 200 distinct CSRs, JSON-escaped one per line.
for i in $(seq 1 200); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=bench-$i" 2>/dev/null | awk '{printf "%s\\n", $0} END {print ""}'
done >"$work/csrs.txt"
export BENCH_CSRS="$work/csrs.txt"

# The bare signing service: a P-256 CA, cfssl's default signing profile.
if [ "${BENCH_CSR:-1}" = 1 ]; then
mkdir -p "$work/cfssl"
(cd "$work/cfssl" &&
  echo '{"CN":"Bench CA","key":{"algo":"ecdsa","size":256}}' | cfssl genkey -initca - 2>/dev/null |
  python3 -c 'import json,sys; d=json.load(sys.stdin); open("ca.pem","w").write(d["cert"]); open("ca-key.pem","w").write(d["key"])')
cfssl_port="$(free_port)"
cfssl serve -address 127.0.0.1 -port "$cfssl_port" -ca "$work/cfssl/ca.pem" \
  -ca-key "$work/cfssl/ca-key.pem" -loglevel 5 >"$work/cfssl/serve.log" 2>&1 &
cfssl_pid=$!; pids+=("$cfssl_pid")
wait_tcp "$cfssl_port"
fi

cfssl_run() {
  wrk -t2 -c"$connections" -d"$duration" --latency -s "$root/bench/cfssl.lua" \
    "http://127.0.0.1:$cfssl_port" | grep RESULT | sed 's/^RESULT //'
}

# Fills the registry with `fleet` active certificate devices as a registration
# leaves them (as rows, like the rotation benchmark does): the device, its
# certificate (a PEM-sized text) and its audit event. The registrations then run
# beside a large fleet, and so does the reconciler's pass every
# broker.reconcile_seconds.
fill() {
  local backend="$1" url="$2"
  local now; now="$(date -u '+%Y-%m-%d %H:%M:%S')"
  local later; later="$(date -u -d '+365 days' '+%Y-%m-%d %H:%M:%S')"
  if [ "$backend" = sqlite ]; then
    sqlite3 "${url#sqlite://}" "BEGIN;
      CREATE TEMP TABLE n AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $fleet) SELECT i FROM c;
      INSERT INTO devices (id, serial, name, model_code, location, firmware_version, status,
        bootstrap_key_id, batch, config, metadata, created_at, updated_at, credential)
      SELECT printf('00000000-0000-7000-8000-%012d', i), 'FLEET-' || i, 'FLEET-' || i, NULL, '',
        '1.0.0', 'active', NULL, NULL, '{}', '{}', '$now', '$now', 'certificate' FROM n;
      INSERT INTO certificates (id, device_id, serial, fingerprint, subject, issuer, key_algorithm,
        not_before, not_after, status, revoked_at, revocation_reason, pem, created_at)
      SELECT printf('00000000-0000-7000-9000-%012d', i), printf('00000000-0000-7000-8000-%012d', i),
        printf('%032X', i), printf('%064x', i), printf('CN=00000000-0000-7000-8000-%012d', i),
        'CN=Onboard CA', 'ecdsa-p256', '$now', '$later', 'active', NULL, NULL,
        replace(hex(zeroblob(380)), '0', 'A'), '$now' FROM n;
      INSERT INTO audit_events (id, occurred_at, actor, action, outcome, reason, device_id, serial,
        key_prefix, remote_addr, details)
      SELECT printf('00000000-0000-7000-a000-%012d', i), '$now', 'device:127.0.0.1', 'device.register',
        'success', NULL, printf('00000000-0000-7000-8000-%012d', i), 'FLEET-' || i, 'obk_fill',
        '127.0.0.1', '{\"reregistration\":false,\"csr\":true}' FROM n;
      COMMIT;"
  else
    psql -q "$url" -c "BEGIN;
      INSERT INTO devices (id, serial, name, model_code, location, firmware_version,
        status, bootstrap_key_id, batch, config, metadata, created_at, updated_at, credential)
      SELECT '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), 'FLEET-' || i, 'FLEET-' || i,
        NULL, '', '1.0.0', 'active', NULL, NULL, '{}', '{}', '$now', '$now', 'certificate'
      FROM generate_series(1, $fleet) AS i;
      INSERT INTO certificates (id, device_id, serial, fingerprint, subject, issuer, key_algorithm,
        not_before, not_after, status, revoked_at, revocation_reason, pem, created_at)
      SELECT '00000000-0000-7000-9000-' || lpad(i::text, 12, '0'),
        '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'), lpad(upper(to_hex(i)), 32, '0'),
        lpad(to_hex(i), 64, '0'), 'CN=00000000-0000-7000-8000-' || lpad(i::text, 12, '0'),
        'CN=Onboard CA', 'ecdsa-p256', '$now', '$later', 'active', NULL, NULL, repeat('A', 760), '$now'
      FROM generate_series(1, $fleet) AS i;
      INSERT INTO audit_events (id, occurred_at, actor, action, outcome, reason, device_id, serial,
        key_prefix, remote_addr, details)
      SELECT '00000000-0000-7000-a000-' || lpad(i::text, 12, '0'), '$now', 'device:127.0.0.1',
        'device.register', 'success', NULL, '00000000-0000-7000-8000-' || lpad(i::text, 12, '0'),
        'FLEET-' || i, 'obk_fill', '127.0.0.1', '{\"reregistration\":false,\"csr\":true}'
      FROM generate_series(1, $fleet) AS i;
      COMMIT;"
    # What a fleet that grew over months would not have: the autovacuum and the
    # checkpoint that a bulk insert of this size sets off, done before the run.
    psql -q "$url" -c "VACUUM ANALYZE;" -c "CHECKPOINT;"
  fi
}

run() {
  local backend="$1" broker="$2" devices="$3" url="$4"
  local name="$backend-$broker-$devices"
  local dir="$work/$name"; mkdir -p "$dir"; cd "$dir"
  local port; port="$(free_port)"
  export ONBOARD__DATABASE__URL="$url" ONBOARD__SERVER__BIND="127.0.0.1:$port" \
    ONBOARD__RATE_LIMIT__REQUESTS_PER_MINUTE=0 ONBOARD__RATE_LIMIT__FAILURES_PER_HOUR=0 \
    ONBOARD__LOG__LEVEL=warn ONBOARD__BROKER__KIND="$broker"
  "$bin/onboardctl" migrate >/dev/null
  # On PostgreSQL the server never makes a CA by itself (replicas would each make one).
  [ "$backend" = postgres ] && "$bin/onboardctl" ca init >/dev/null
  [ "$devices" -gt 0 ] && fill "$backend" "$url"
  "$bin/onboard-server" >server.log 2>&1 &
  local server_pid=$!; pids+=("$server_pid")
  wait_http "http://127.0.0.1:$port/api/health"
  BENCH_KEY="$("$bin/onboardctl" --output json keys create --batch bench --max-uses 1000000 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["key"])')"
  export BENCH_KEY
  # One registration first (the CA, the first CRL and the broker files are made
  # on first use), then the idle RSS.
  BENCH_SERIAL_PREFIX=WARM wrk -t1 -c1 -d1s -s "$root/bench/register.lua" \
    "http://127.0.0.1:$port" >/dev/null
  # A server-generated key the warm-up left in the making finishes first.
  [ "${BENCH_NO_CSR:-0}" = 1 ] && sleep 2
  local idle; idle="$(rss_kib "$server_pid" VmRSS)"
  echo "== $name" >&2
  local cpu_before; cpu_before="$(cpu_ticks "$server_pid")"
  local ours; ours="$(wrk -t2 -c"${BENCH_RUN_CONNECTIONS:-$connections}" -d"${BENCH_RUN_DURATION:-$duration}" \
    --timeout "${BENCH_WRK_TIMEOUT:-2s}" --latency -s "$root/bench/register.lua" \
    "http://127.0.0.1:$port" | tee "$dir/wrk.txt" | grep RESULT | sed 's/^RESULT //')"
  local cpu_after; cpu_after="$(cpu_ticks "$server_pid")"
  local peak; peak="$(rss_kib "$server_pid" VmHWM)"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  if [ "${BENCH_NO_CSR:-0}" = 1 ]; then
    last_rps="$(echo "$ours" | sed 's/.*rps=\([0-9.]*\).*/\1/')"
    local ok; ok="$(echo "$ours" | sed 's/.*ok=\([0-9]*\).*/\1/')"
    # The server's CPU time per registration during the run.
    last_cpu_ms="$(python3 -c "print(round(($cpu_after - $cpu_before) * 1000 / $clk_tck / max($ok, 1), 1))")"
    echo "RESULT backend=$backend broker=$broker server_key=$ONBOARD__CA__KEY_ALGORITHM $ours cpu_ms_per_registration=$last_cpu_ms rss_idle_mib=$((idle / 1024)) rss_peak_mib=$((peak / 1024))"
    cd "$root"; return
  fi
  local theirs; theirs="$(cfssl_run)"
  local ratio; ratio="$(python3 -c "import sys; o=float('$ours'.split()[0][4:]); c=float('$theirs'.split()[0][4:]); print(f'{o/c:.3f}')")"
  echo "RESULT backend=$backend broker=$broker fleet=$devices $ours rss_idle_mib=$((idle / 1024)) rss_peak_mib=$((peak / 1024)) | cfssl $theirs | ratio=$ratio"
  if [ "${BENCH_HALF:-1}" = 1 ]; then
    # Half of that peak: the same connections, each pausing after an answer for
    # what brings the rate to about half (connections / (peak / 2) per request,
    # less the median latency); the line gives the rate reached and its latency.
    local delay_ms; delay_ms="$(python3 -c "
r = dict(kv.split('=') for kv in '$ours'.split())
print(max(1, round(1000 * $connections / (float(r['rps']) / 2) - float(r['p50_ms']))))")"
    "$bin/onboard-server" >server-half.log 2>&1 &
    server_pid=$!; pids+=("$server_pid")
    wait_http "http://127.0.0.1:$port/api/health"
    local half; half="$(BENCH_DELAY_MS="$delay_ms" BENCH_SERIAL_PREFIX=HALF wrk -t2 -c"$connections" \
      -d"$duration" --timeout 2s --latency -s "$root/bench/register.lua" \
      "http://127.0.0.1:$port" | grep RESULT | sed 's/^RESULT //')"
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
    echo "RESULT half-peak backend=$backend broker=$broker fleet=$devices delay_ms=$delay_ms $half"
  fi
  cd "$root"
}

pg_admin="${ONBOARD_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
dbs=()
trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; for d in "${dbs[@]:-}"; do [ -n "$d" ] && psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1; done; rm -rf "$work"' EXIT
n=0
[ "${BENCH_CSR:-1}" = 1 ] || backends=""
for backend in $backends; do
  for broker in $brokers; do
    sizes=0; [ "$fleet" -gt 0 ] && sizes="0 $fleet"
    for devices in $sizes; do
      n=$((n + 1))
      if [ "$backend" = sqlite ]; then
        mkdir -p "$work/db$n"
        run sqlite "$broker" "$devices" "sqlite://$work/db$n/onboard.db"
      else
        db="onboard_bench_$$_$n"; dbs+=("$db")
        psql "$pg_admin" -qc "CREATE DATABASE $db"
        run postgres "$broker" "$devices" "${pg_admin%/*}/$db"
      fi
    done
  done
done

if [ "${BENCH_KEYGEN:-1}" = 1 ]; then
  n=$((n + 1)); mkdir -p "$work/db$n"
  BENCH_NO_CSR=1 ONBOARD__CA__KEY_ALGORITHM=ecdsa-p256 \
    run sqlite none 0 "sqlite://$work/db$n/onboard.db"
  # Raw RSA-2048 key generation on 2 threads; then the server, loaded by 2
  # connections (so 2 keys in the making, as many as the raw run's threads: on a
  # machine shared with others, more threads would get a larger share of it),
  # for the time the raw rate took for as many keys (a key can take seconds: wrk
  # waits 60 s); then the raw rate again. The ratio is to the mean of the two raw
  # rates (the machine's load drifts).
  rsa_keys="${BENCH_RSA_KEYS:-200}"
  raw_rate() {
    echo "== raw rsa-2048, $rsa_keys keys" >&2
    local TIMEFORMAT='%U %S' raw cpu
    # The example's CPU time (bash's `time`: user and system seconds).
    cpu="$( { time "$bin/examples/rsa-keygen-rate" "$rsa_keys" 2 >"$work/raw.txt"; } 2>&1 )"
    raw="$(grep RESULT "$work/raw.txt" | sed 's/^RESULT //')"
    raw_keys_per_s="${raw##*keys_per_s=}"
    raw_cpu_ms="$(python3 -c "u, s = '$cpu'.split(); print(round((float(u) + float(s)) * 1000 / $rsa_keys, 1))")"
    echo "RESULT $raw cpu_ms_per_key=$raw_cpu_ms"
  }
  raw_rate; raw_before="$raw_keys_per_s"; raw_cpu_before="$raw_cpu_ms"
  rsa_secs="$(python3 -c "import math; print(math.ceil($rsa_keys / $raw_before))")"
  n=$((n + 1)); mkdir -p "$work/db$n"
  BENCH_NO_CSR=1 ONBOARD__CA__KEY_ALGORITHM=rsa-2048 BENCH_RUN_DURATION="${rsa_secs}s" \
    BENCH_RUN_CONNECTIONS=2 BENCH_WRK_TIMEOUT=60s run sqlite none 0 "sqlite://$work/db$n/onboard.db"
  raw_rate; raw_after="$raw_keys_per_s"; raw_cpu_after="$raw_cpu_ms"
  echo "RESULT rsa-2048 server-side registrations/s $last_rps (2 connections, ${rsa_secs}s) / raw keys/s $raw_before and $raw_after (2 threads, $rsa_keys keys each): ratio=$(python3 -c "print(f'{2 * $last_rps / ($raw_before + $raw_after):.3f}')")"
  echo "RESULT rsa-2048 CPU ms per key raw $raw_cpu_before and $raw_cpu_after / per server-side registration $last_cpu_ms: ratio=$(python3 -c "print(f'{($raw_cpu_before + $raw_cpu_after) / 2 / $last_cpu_ms:.3f}')")"
fi
