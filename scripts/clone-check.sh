#!/usr/bin/env bash
# A clone anywhere works: clones the committed HEAD into a temporary directory with nothing
# beside it and, inside the clone, runs the set-up (scripts/setup.sh), `nse generate` on the
# default model, one `nse edit` with the default covariance and the edited model's answer, and the
# cpu parity tests (golden forward pass, covariance against the reference), all under
# `strace -f -e trace=%file`. It fails, listing the accesses, when anything touches a path
# containing "shared" outside the clone, or the original checkout's files other than its target/.
#
# To stay quick it reuses from this checkout: the model (hard-linked; setup still checks its
# sha256), the page's covariance statistic (setup keeps it only if it names the model's sha256),
# node_modules (linked), and the target directory (CARGO_TARGET_DIR: no cold build, only the nse
# crate recompiles). The CLI's covariance cache (~/.cache/nse, keyed by model and corpus hash)
# is shared as it is between any two checkouts.
#
# It tests what is committed: uncommitted changes get a warning and are not part of the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
orig=$(pwd -P)
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf

work=
keep=0
say() { printf '\033[1mclone-check:\033[0m %s\n' "$*"; }
fail() {
  printf '\033[1;31mclone-check: FAILED: %s\033[0m\n' "$*" >&2
  if [ -n "$work" ]; then
    keep=1
    printf 'clone-check: the clone, its outputs and strace logs are kept in %s\n' "$work" >&2
  fi
  exit 1
}
cleanup() { if [ -n "$work" ] && [ "$keep" = 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

command -v strace >/dev/null || fail "strace is missing; bash scripts/setup.sh installs it"
[ -f "models/$MODEL" ] || fail "models/$MODEL is missing; run bash scripts/setup.sh here first"
if [ -n "$(git status --porcelain)" ]; then
  say "WARNING: uncommitted changes here are NOT checked; the clone is of HEAD $(git rev-parse --short HEAD):"
  git status --short | head -20
fi

t0=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/nse-clone-check.XXXXXX")
work=$(cd "$work" && pwd -P)
clone="$work/nse"
git clone --quiet --no-checkout "$orig" "$clone"
git -C "$clone" fetch --quiet "$orig" HEAD
git -C "$clone" checkout --quiet --detach FETCH_HEAD
[ ! -e "$work/shared" ] || fail "$work/shared exists"
say "cloned $(git -C "$clone" rev-parse --short HEAD) into $clone"

mkdir -p "$clone/models" "$clone/www/models"
ln "$(readlink -f "models/$MODEL")" "$clone/models/$MODEL" 2>/dev/null || cp "models/$MODEL" "$clone/models/"
if [ -f www/models/cov/covariance.json ]; then
  cp -al www/models/cov "$clone/www/models/cov" 2>/dev/null || cp -r www/models/cov "$clone/www/models/cov"
fi
if [ -d node_modules ]; then
  ln -s "$orig/node_modules" "$clone/node_modules"
fi
cat >"$work/request.json" <<'EOF'
[{"prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower", "target_new": "Rome"}]
EOF

# The defaults are under test: no data directory or model named from outside.
unset NSE_DATA NSE_MODEL
export CARGO_TARGET_DIR="$orig/target"
nse="$CARGO_TARGET_DIR/debug/nse"
cd "$clone"
# Runs "$@" under strace, its file accesses logged to $work/strace.NAME.log and its output to
# $work/NAME.out (shown on failure).
traced() {
  local name=$1
  shift
  say "$name: $*"
  if ! strace -f -qq --seccomp-bpf -e trace=%file -o "$work/strace.$name.log" "$@" >"$work/$name.out" 2>&1; then
    tail -40 "$work/$name.out" >&2
    fail "$name failed in the clone: $*"
  fi
}

traced setup bash scripts/setup.sh
traced build cargo build --bin nse
traced generate "$nse" generate --backend cpu --prompt "The capital of France is" --max-tokens 4
grep -q "Paris" "$work/generate.out" || { cat "$work/generate.out"; fail "generate did not say Paris"; }
traced edit "$nse" edit --backend cpu --requests "$work/request.json" --batch 1 --out "$work/edit"
grep -q "^covariance: $clone/data/wikitext/" "$work/edit.out" || {
  cat "$work/edit.out"
  fail "nse edit did not take its covariance corpus from the clone's data/"
}
traced edited "$nse" generate --backend cpu --patch "$work/edit" \
  --prompt "The Eiffel Tower is located in the city of" --max-tokens 2
grep -q "Rome" "$work/edited.out" || { cat "$work/edited.out"; fail "the edited model did not say Rome"; }
# The cpu parity tests: the forward pass and the covariance (2,048 tokens recomputed; setup's
# 150,000-token statistic against the reference figures).
traced tests cargo test --test golden_forward --test golden_covariance -- cpu reference

# Every path the traced processes named in strace logs "$@", minus execve's argument lists
# ("-shared" is a linker flag).
traced_paths() { sed -E 's/\[[^]]*\]//g' "$@" | grep -oE '"[^"]*"' | tr -d '"' | sort -u; }
# Of the paths on stdin, those containing "shared" outside the clone (absolute, or relative and
# climbing with ..), except system and toolchain files whose names merely contain the word: the
# kernel's cpu cache topology (/sys/.../shared_cpu_map, read by the thread pools), glibc's
# libc_nonshared.a (the linker), the wasm-bindgen-shared crate in cargo's registry. A path
# component named exactly "shared" counts wherever it is.
sys="^(/sys/|/proc/|/usr/lib/|/lib/|${CARGO_HOME:-$HOME/.cargo}/registry/|${RUSTUP_HOME:-$HOME/.rustup}/)"
shared_leaks() {
  local paths
  paths=$(cat)
  {
    printf '%s\n' "$paths" | grep 'shared' | grep -v "^$clone/" | grep -E '^/|(^|/)\.\.(/|$)' | grep -vE "$sys"
    printf '%s\n' "$paths" | grep -E '(^|/)shared(/|$)' | grep -v "^$clone/"
  } | sort -u || true
}

# The guard itself must see a deliberate look at ../shared (which does not exist here).
strace -f -qq -e trace=%file -o "$work/guard.log" test -e ../shared || true
[ -n "$(traced_paths "$work/guard.log" | shared_leaks)" ] || fail "the strace guard missed an access to ../shared"

paths=$(traced_paths "$work"/strace.*.log)
leaks=$(printf '%s\n' "$paths" | shared_leaks)
# The original checkout lends its target directory only.
outside=$(printf '%s\n' "$paths" | grep "^$orig/" | grep -vE "^$orig/target(/|$)" || true)
if [ -n "$leaks$outside" ]; then
  [ -z "$leaks" ] || printf 'accessed a path containing "shared" outside the clone:\n%s\n' "$leaks" >&2
  [ -z "$outside" ] || printf 'accessed the original checkout instead of the clone:\n%s\n' "$outside" >&2
  fail "the clone reached outside itself"
fi
grep -E '^covariance:|^request|^Eiffel|^The Eiffel' "$work/edit.out" || true
grep -E 'Rome' "$work/edited.out" | head -3 || true
say "ok in $(($(date +%s) - t0)) s: setup, generate, edit (→ Rome), cpu parity tests; $(printf '%s\n' "$paths" | wc -l) paths traced, none under a shared/ or the original checkout"
