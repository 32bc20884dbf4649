#!/usr/bin/env bash
# Installs whatever is missing (scripts/setup.sh), then runs every test:
#   1. native: cpu backend, gpu backend on Mesa lavapipe, golden parity, editing invariants;
#   2. wasm: wasm-bindgen tests in headless Chromium with WebGPU (SwiftShader), run by wasm-pack;
#   3. the end-to-end tests of the web page and of the npm package in examples/embed (Trunk and
#      wasm-pack builds + Playwright + Chromium);
#   4. a fresh clone of the committed HEAD in a temporary directory works on its own
#      (scripts/clone-check.sh; last, because it rebuilds the nse crate from the clone's path).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"   # lavapipe: the gpu tests need an adapter and fail without one
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "native tests (cpu + gpu on lavapipe)"
cargo test --all-targets

step "wasm tests in headless Chromium (WebGPU), with wasm-pack"
# The installed ChromeDriver and wasm-bindgen (no download); Chromium's flags come from
# ci/webdriver.json (.cargo/config.toml). `cargo test --target wasm32-unknown-unknown --test web`
# runs the same tests through the same runner.
wasm-pack test --headless --chrome --mode no-install -- --test web

step "end-to-end test of the web page"
bash e2e/run.sh

step "a clone anywhere works (set-up, generate, edit, cpu parity tests in a fresh clone, under strace)"
bash scripts/clone-check.sh

step "all tests passed"
