#!/usr/bin/env bash
# The gpu backend's benchmarks on this machine's GPU, in one command, with no model file:
# `nse bench forward` and `nse bench edit` on random weights of the default model's shape
# (--model synthetic:smollm2-135m), each run under five gpu paths in the same invocation:
#
#   baseline  NSE_GPU_BASELINE=1: the first design (a compute pass, uniform buffer and bind group
#             per dispatch, a submit every 64 commands, the tiled matmul at every row count and
#             without split-K, one invocation per (row, head) walking the keys in attention and
#             its backward)
#   ring      the uniform ring, shared passes, cached bind groups and recycled buffers, split-K,
#             split-KV attention and a workgroup per row in its backward; the tiled matmul
#             (NSE_GPU_GEMV=0)
#   tuned     ring + the GEMV for x·Wᵀ with at most 8 rows (NSE_GPU_FUSED=0)
#   portable  tuned + decoding's fused GEMVs (q, k, v with the norm, RoPE and the cache write;
#             the residual adds; gate and up with SiLU; the final norm with the head), every
#             GEMV reducing in workgroup memory (NSE_GPU_SUBGROUPS=0)
#   fused     portable, with the GEMVs' subgroup reductions where the adapter has subgroups:
#             what nse runs by default
#
# and a long prompt's prefill (NSE_BENCH_LONG_PREFILL tokens, default 440) on the default path
# twice: with attention split along the keys for every row count (NSE_GPU_TILED_ATTENTION=0) and
# tiled from 32 query rows on (the default).
#
# It prints one table of speeds and device counts with the ratios to the baseline, and writes
# every JSON plus summary.json to the output directory.
#
#   scripts/gpu-bench.sh [OUT_DIR]        (default artifacts/bench/gpu)
#
# Environment: NSE_BIN (an nse binary; default: `cargo build --release` here), NSE_BENCH_MODEL
# (default synthetic:smollm2-135m), NSE_BENCH_EDIT=0 to skip the edit benchmark,
# NSE_BENCH_COV_TOKENS (the edit's covariance tokens, default 20480: the timings do not depend
# on the statistic's quality), NSE_BENCH_TOKENIZER (a .gguf or tokenizer.json for the synthetic
# model; default the default model's when it is on disk, else one token per byte),
# NSE_BENCH_FORWARD_ARGS and NSE_BENCH_EDIT_ARGS (replace the benchmarks' sizes, e.g. for a quick
# run on a software adapter: "--prefill-tokens 16 --decode-tokens 4 --repeats 1" and
# "--batch 1 --z-batches 1 --cov-tokens 1024", with NSE_BENCH_COV_TOKENS=4096: fewer tokens than
# the MLP has neurons leave the solve's matrix singular).
# Without a GPU it runs on a software Vulkan: Mesa's lavapipe (WGPU_BACKEND=vulkan), or the
# SwiftShader that headless Chromium uses, through the ICD file Chromium ships
# (VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json); docs/results/gpu-lavapipe/ and
# docs/results/gpu-swiftshader/ hold such runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/bench/gpu}
mkdir -p "$out"
bin=${NSE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --bin nse
  bin=target/release/nse
fi
model=${NSE_BENCH_MODEL:-synthetic:smollm2-135m}
tok=()
[ -n "${NSE_BENCH_TOKENIZER:-}" ] && tok=(--tokenizer "$NSE_BENCH_TOKENIZER")
paths=(baseline ring tuned portable fused)
env_of() {
  case $1 in
    baseline) echo NSE_GPU_BASELINE=1 ;;
    ring) echo NSE_GPU_GEMV=0 ;;
    tuned) echo NSE_GPU_FUSED=0 ;;
    portable) echo NSE_GPU_SUBGROUPS=0 ;;
    fused) echo NSE_GPU_DEFAULT=1 ;;
  esac
}

"$bin" info --model "$model" "${tok[@]}" | tee "$out/info.txt"
for p in "${paths[@]}"; do
  echo "== bench forward, $p path"
  env "$(env_of "$p")" "$bin" bench forward --model "$model" "${tok[@]}" --backend gpu \
    --compare-f32 false ${NSE_BENCH_FORWARD_ARGS:-} --out "$out/forward-$p.json"
done
for p in split tiled; do
  echo "== bench forward, long prefill, $p attention"
  env NSE_GPU_TILED_ATTENTION="$([ $p = tiled ] && echo 1 || echo 0)" "$bin" bench forward \
    --model "$model" "${tok[@]}" --backend gpu --compare-f32 false \
    --prefill-tokens "${NSE_BENCH_LONG_PREFILL:-440}" --decode-tokens 1 --repeats 1 \
    --out "$out/prefill-$p.json"
done
if [ "${NSE_BENCH_EDIT:-1}" != 0 ]; then
  hp="$out/hparams.json"
  "$bin" hparams --model "$model" "${tok[@]}" --out "$hp"
  sed -i -E "s/\"mom2_n_samples\": [0-9]+/\"mom2_n_samples\": ${NSE_BENCH_COV_TOKENS:-20480}/" "$hp"
  for p in baseline fused; do
    echo "== bench edit, $p path"
    env "$(env_of "$p")" "$bin" bench edit --model "$model" "${tok[@]}" --backend gpu \
      --hparams "$hp" ${NSE_BENCH_EDIT_ARGS:---batch 10 --z-batches 10 --cov-tokens 10240} \
      --out "$out/edit-$p.json"
  done
fi

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
fwd = {p: load(f"forward-{p}.json") for p in ("baseline", "ring", "tuned", "portable", "fused")}
edit = {p: load(f"edit-{p}.json") for p in ("baseline", "fused")}
base = fwd["baseline"]
print(f"\ngpu-bench on {base['device']} ({base['model']})")
print(f"{'forward':<34}" + "".join(f"{p:>12}" for p in fwd) + f"{'speed-up':>12}")
rows = [("prefill tokens/s", "prefill_tokens_per_s", True), ("decode tokens/s", "decode_tokens_per_s", True),
        ("decode: recording, ms/token", "decode_record_ms_per_token", False),
        ("decode: waiting, ms/token", "decode_wait_ms_per_token", False),
        ("decode, next pass queued, tok/s", "decode_overlapped_tokens_per_s", True),
        ("empty round trip, ms", "round_trip_ms", False)]
summary = {"device": base["device"], "model": base["model"], "forward": {}, "edit": {}}
for label, key, higher_is_better in rows:
    vals = {p: fwd[p]["results"].get(key, float("nan")) for p in fwd}
    ratio = vals["fused"] / vals["baseline"] if higher_is_better else vals["baseline"] / vals["fused"]
    summary["forward"][key] = vals | {"speedup": ratio}
    print(f"{label:<34}" + "".join(f"{vals[p]:>12.2f}" for p in fwd) + f"{ratio:>11.2f}x")
for key in ("dispatches", "passes", "submits", "bind_groups", "buffers_created", "readbacks"):
    vals = {p: fwd[p]["device_work"]["per_decode_token"][key] for p in fwd}
    summary["forward"]["per_decode_token_" + key] = vals
    print(f"{'per decode token: ' + key:<34}" + "".join(f"{vals[p]:>12}" for p in fwd))
long = {p: load(f"prefill-{p}.json") for p in ("split", "tiled")}
if long["split"] and long["tiled"]:
    print(f"\n{'long prefill':<34}{'split':>12}{'tiled':>12}{'tiled/split':>12}")
    vals = {p: long[p]["results"]["prefill_tokens_per_s"] for p in long}
    print(f"{'prefill tokens/s':<34}{vals['split']:>12.2f}{vals['tiled']:>12.2f}{vals['tiled'] / vals['split']:>11.2f}x")
    for key in ("dispatches",):
        d = {p: long[p]["device_work"]["per_prefill"][key] for p in long}
        print(f"{'per prefill: ' + key:<34}{d['split']:>12}{d['tiled']:>12}")
    peak = {p: long[p]["results"]["peak_gpu_buffer_mib"] for p in long}
    print(f"{'peak GPU buffers, MiB':<34}{peak['split']:>12.1f}{peak['tiled']:>12.1f}")
    summary["long_prefill"] = {"prefill_tokens_per_s": vals, "peak_gpu_buffer_mib": peak,
                               "speedup": vals["tiled"] / vals["split"]}
if edit["baseline"] and edit["fused"]:
    print(f"\n{'edit (seconds)':<34}{'baseline':>12}{'fused':>12}{'base/fused':>12}")
    for label, key in (("z, one request (mean)", "z_seconds_mean"), ("z per evaluation", "z_seconds_per_evaluation"),
                       ("batch, z preloaded", "batch_seconds"), ("batch end to end", "end_to_end_batch_seconds"),
                       ("covariance per 10k tokens", "covariance_seconds_per_10k_tokens")):
        b, t = edit["baseline"]["results"][key], edit["fused"]["results"][key]
        summary["edit"][key] = {"baseline": b, "fused": t, "speedup": b / t}
        print(f"{label:<34}{b:>12.3f}{t:>12.3f}{b / t:>11.2f}x")
    for key in ("dispatches", "passes", "submits", "bind_groups", "buffers_created", "readbacks", "readback_bytes"):
        vals = {p: (edit[p].get("device_work_per_z_step") or {}).get(key) for p in edit}
        summary["edit"]["per_z_step_" + key] = vals
        print(f"{'per z Adam step: ' + key:<34}" + "".join(f"{str(vals[p]):>12}" for p in edit))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\nwrote {out}/summary.json")
PY
