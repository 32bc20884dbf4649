#!/usr/bin/env bash
# The long-horizon study of docs/results/seq2000 (issue 14): 2,000 CounterFact edits in batches of
# 100 with NSE, MEMIT, AlphaEdit and MEMIT-seq (a checkpoint every 200 edits), then 1,000 zsRE
# edits with NSE and AlphaEdit. Each run is its own `nse eval` output directory under $OUT.
#
# Resumable: run it again after any interruption and every run continues from its last finished
# batch (`nse eval --resume`, bit for bit); finished runs are skipped. A resume refuses another
# code version, so run it from a checkout that stays at one commit (a `git worktree`), with the
# binary built from that commit:
#
#   git worktree add ../studywt HEAD && cd ../studywt && cp -r ../nse/models . \
#     && cargo build --bin nse && nice -n 19 bash scripts/study-seq2000.sh
#
# About 2–2.5 h per CounterFact run on two cores. METHODS and ZSRE_METHODS pick runs, e.g.
# METHODS=nse ZSRE_METHODS= bash scripts/study-seq2000.sh. `nse report --from DIR/report.json …`
# merges finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."

NSE=${NSE:-target/debug/nse}
OUT=${OUT:-artifacts/eval}
CF=data/counterfact_easyedit/counterfact-edit.json
ZSRE=data/zsre/zsre_mend_train-1k.json
COMMON="--batch 100 --checkpoint-every 2 --ppl-tokens 4096 --fluency 10 --backend cpu"

run() {
  local dir=$OUT/$1
  shift
  if [ -f "$dir/resume.json" ]; then
    echo "study: resuming $dir ($(date -u +%H:%M:%S))"
    "$NSE" eval --resume "$dir"
  elif [ -f "$dir/report.json" ]; then
    echo "study: $dir is finished"
  else
    echo "study: starting $dir ($(date -u +%H:%M:%S))"
    "$NSE" eval "$@" --out "$dir"
  fi
}

for m in ${METHODS-nse memit alphaedit memit-seq}; do
  # shellcheck disable=SC2086
  run "seq2000-$m" --dataset "$CF" --n 2000 $COMMON --method "$m"
done
for m in ${ZSRE_METHODS-nse alphaedit}; do
  # shellcheck disable=SC2086
  run "zsre1000-$m" --dataset "$ZSRE" --n 1000 $COMMON --method "$m"
done
echo "study: all runs finished ($(date -u +%H:%M:%S))"
