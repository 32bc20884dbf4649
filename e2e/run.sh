#!/usr/bin/env bash
# End-to-end tests of the page: builds dist/ with trunk when it is missing or older than the
# sources, serves it on 127.0.0.1, runs e2e/page.mjs (loading, generation, bad model files) and
# e2e/editor.mjs (one edit, compare, export/import, reload, undo, an over-limit model) in
# headless Chromium, stops the server.
# And e2e/embed.mjs: the npm package (pkg/, built by scripts/package.sh when missing or older than
# the sources) in examples/embed/index.html, served from the repository root.
# Usage: bash e2e/run.sh   (E2E_PORT=8091 by default; E2E_REBUILD=1 forces a build;
#        E2E_ONLY=page|editor|embed runs one of the three; E2E_BACKEND=webgpu edits on WebGPU)
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${E2E_PORT:-8091}"
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf

if [ ! -f "www/models/$MODEL" ]; then
  echo "e2e: www/models/$MODEL is missing: run 'bash scripts/setup.sh' first" >&2
  exit 1
fi
stale=""
if [ ! -f dist/index.html ]; then
  stale="no dist/index.html"
elif [ ! -f "dist/models/$MODEL" ]; then
  stale="dist/ lacks the default model"
elif [ -n "$(find src www Cargo.toml Cargo.lock Trunk.toml .cargo/config.toml -newer dist/index.html ! -name '*.md' -print -quit)" ]; then
  stale="sources changed since the last build"
fi
if [ -n "$stale" ] || [ "${E2E_REBUILD:-0}" = 1 ]; then
  echo "e2e: building the page (${stale:-forced}): trunk build --release"
  trunk build --release
fi

ONLY="${E2E_ONLY:-all}"
if [ "$ONLY" = all ] || [ "$ONLY" = embed ]; then
  if [ ! -f pkg/nse.js ] || [ -n "$(find src Cargo.toml Cargo.lock js -newer pkg/nse.js ! -name '*.md' -print -quit)" ] \
      || [ "${E2E_REBUILD:-0}" = 1 ]; then
    echo "e2e: building the npm package: bash scripts/package.sh"
    bash scripts/package.sh
  fi
fi

python3 -m http.server "$PORT" --bind 127.0.0.1 --directory dist >/dev/null 2>&1 &
SERVER=$!
EMBED_PORT=$((PORT + 2))
python3 -m http.server "$EMBED_PORT" --bind 127.0.0.1 >/dev/null 2>&1 &
EMBED_SERVER=$!
trap 'kill "$SERVER" "$EMBED_SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null; then
    break
  fi
  sleep 0.2
done

status=0
if [ "$ONLY" = all ] || [ "$ONLY" = page ]; then
  APP_URL="http://127.0.0.1:$PORT/" node e2e/page.mjs || status=1
fi
if [ "$ONLY" = all ] || [ "$ONLY" = editor ]; then
  APP_URL="http://127.0.0.1:$PORT/" node e2e/editor.mjs || status=1
fi
if [ "$ONLY" = all ] || [ "$ONLY" = embed ]; then
  EMBED_URL="http://127.0.0.1:$EMBED_PORT/" node e2e/embed.mjs || status=1
fi
exit $status
