#!/usr/bin/env bash
# Times `onboardctl devices import` of 10,000 rows against PostgreSQL (release
# build), then the same file again (which must add nothing). Prints RESULT lines;
# the figures go to docs/benchmarks.md. The broker is the default (mosquitto-file);
# ONBOARD__BROKER__KIND=none in the environment measures without one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rows="${BENCH_ROWS:-10000}"
cargo build --release --bin onboardctl >&2
work="$(mktemp -d)"
pg_admin="${ONBOARD_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db="onboard_import_bench_$$"
trap 'psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
python3 - "$work/devices.csv" "$rows" <<'PY'
import csv, sys
with open(sys.argv[1], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["name", "model", "location", "firmware", "serial"])
    for i in range(int(sys.argv[2])):
        w.writerow([f"device {i}", "tempsensor", f"hall {i % 7}", "1.0.0", f"SN-{i:07d}"])
PY
psql "$pg_admin" -qc "CREATE DATABASE $db"
export ONBOARD__DATABASE__URL="${pg_admin%/*}/$db" ONBOARD__CA__DIR="$work/ca"
cd "$work"
"$root/target/release/onboardctl" migrate >/dev/null
"$root/target/release/onboardctl" ca init >/dev/null
"$root/target/release/onboardctl" models create tempsensor >/dev/null
# Wall time and the CPU time of onboardctl itself (user + system), and the load
# average before the run: the machine is shared, so CPU seconds are the figure
# that compares across runs.
for run in first again; do
  load="$(cut -d' ' -f1 /proc/loadavg)"
  cpu="$(python3 - "$root/target/release/onboardctl" "$run.txt" <<'PY'
import resource, subprocess, sys, time
start = time.monotonic()
with open(sys.argv[2], "w") as out:
    subprocess.run([sys.argv[1], "devices", "import", "--csv", "devices.csv", "--out", "bundles"],
                   stdout=out, check=True)
wall = time.monotonic() - start
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"seconds={wall:.2f} user={r.ru_utime:.2f} sys={r.ru_stime:.2f}")
PY
)"
  echo "RESULT import=$run rows=$rows $cpu load=$load $(tail -n 1 "$run.txt" | cut -d';' -f1)"
done
