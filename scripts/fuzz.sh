#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (issue 10) one after another, MINUTES each (default 30):
#   bash scripts/fuzz.sh [MINUTES] [TARGET...]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); installs neither.
#
# Each target starts from its seeds (fuzz/seeds/<target>/, valid inputs) and its working corpus
# (fuzz/corpus/<target>/, kept between runs, not committed). A crash stops that target and
# leaves the input in fuzz/artifacts/<target>/; minimise it with
#   cargo +nightly fuzz tmin -s none <target> fuzz/artifacts/<target>/crash-...
# then commit it under tests/hostile/<target>/ and list it in CRASHERS in tests/hostile.rs.
# The last lines of each log (executions, cov/ft coverage, crashes) go to fuzz/logs/summary-<pid>.txt,
# from which docs/fuzzing.md is written.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

minutes="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf hf requests npy hparams patch)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }

# No sanitizer: nse and its dependencies are safe Rust, so ASan's shadow memory buys nothing
# here; panics, integer overflow (debug assertions are on) and allocations over libFuzzer's
# limits are what is hunted, and they are caught without it.
cargo +nightly fuzz build -s none || exit 1

mkdir -p logs
# One summary per invocation, so that two lanes run side by side do not overwrite each other.
summary="logs/summary-$$.txt"
: > "$summary"
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
  echo "== $t: ${minutes} min" | tee -a "$summary"
  cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    > "logs/$t.log" 2>&1
  rc=$?
  {
    grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "logs/$t.log" | tail -2
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "logs/$t.log"
    grep -E 'panicked at|^==[0-9]+== ERROR|SUMMARY|Test unit written' "logs/$t.log" | head -5
    echo "exit $rc"
  } | tee -a "$summary"
  [ "$rc" -ne 0 ] && status=1
done
exit "$status"
