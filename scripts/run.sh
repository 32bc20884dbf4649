#!/usr/bin/env bash
# Installs whatever is missing (scripts/setup.sh), shows the engine on the command line, then
# builds the web editor and serves it on http://127.0.0.1:8080 (Ctrl-C stops it).
# NSE_NO_SERVE=1 stops after the build (for scripted runs).
set -euo pipefail
cd "$(dirname "$0")/.."

# Only what running needs (no test tools); the covariance step of a first set-up then builds
# the release binary used below (one build).
NSE_SETUP_FOR=run NSE_SETUP_RELEASE=1 bash scripts/setup.sh

printf '\n\033[1m== the default model on the command line\033[0m\n'
cargo run --release --bin nse -- generate --prompt "The capital of France is" --max-tokens 8

printf '\n\033[1m== the web editor\033[0m\n'
trunk build --release
if [ "${NSE_NO_SERVE:-0}" = 1 ]; then
  echo "built dist/; serve it with: python3 -m http.server 8080 --bind 127.0.0.1 --directory dist"
  exit 0
fi
echo "open http://127.0.0.1:8080/ in a browser with WebGPU (Chrome/Edge; on Linux start Chrome with --enable-unsafe-webgpu)"
exec python3 -m http.server 8080 --bind 127.0.0.1 --directory dist
