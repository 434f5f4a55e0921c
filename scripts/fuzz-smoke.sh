#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each, 20 by
# default) and prints one line per target with its executions; any crash fails the
# script with the crashing input under fuzz/artifacts/<target>/ (docs/testing.md,
# "Fuzzing"). Needs cargo-fuzz (installed here with `cargo install cargo-fuzz
# --locked` when missing). With no nightly toolchain, RUSTC_BOOTSTRAP=1 lets the
# stable compiler take the sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
targets=(firmware_image csr register_body access_token bundle_token token_request)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

# One build for every target, then the runs.
cargo "${toolchain[@]}" fuzz build
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  log="fuzz/corpus/$t.log"
  if cargo "${toolchain[@]}" fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    echo "fuzz-smoke: $t: ${runs:-?} executions in ${seconds} s, 0 crashes"
  else
    failed=1
    echo "fuzz-smoke: $t FAILED (crash or build error); the last lines of its log:" >&2
    tail -n 40 "$log" >&2
  fi
done
exit "$failed"
