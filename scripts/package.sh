#!/usr/bin/env bash
# Builds the npm package `nse-editor` into pkg/ with wasm-pack (the JavaScript class `Editor`,
# src/web/api.rs), gives it its own README, and lists what `npm pack` would publish.
# Usage: bash scripts/package.sh   (PACKAGE_DEV=1 for a faster debug build)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=--release
[ "${PACKAGE_DEV:-0}" = 1 ] && mode=--dev
# --mode no-install: use the wasm-bindgen on PATH (scripts/setup.sh installs the pinned one);
# nothing is downloaded. wasm-opt is off in Cargo.toml ([package.metadata.wasm-pack]).
wasm-pack build "$mode" --mode no-install --target web --out-dir pkg --out-name nse

# The package's own name, README and licence (wasm-pack copies the project's README).
node -e '
const fs = require("fs");
const p = JSON.parse(fs.readFileSync("pkg/package.json", "utf8"));
p.name = "nse-editor";
p.description = "Edit what a language model knows, in the browser, on the user'"'"'s GPU (WebGPU) or CPU: NSE, MEMIT-seq, MEMIT and AlphaEdit in a Web Worker, behind a Promise API.";
p.license = "Apache-2.0";
p.keywords = ["knowledge-editing", "language-model", "webgpu", "wasm", "nse", "memit"];
p.files = ["nse_bg.wasm", "nse.js", "nse.d.ts", "nse_bg.wasm.d.ts", "snippets", "README.md", "LICENSE"];
fs.writeFileSync("pkg/package.json", JSON.stringify(p, null, 2) + "\n");
'
cp js/README.md pkg/README.md
cp LICENSE pkg/LICENSE
rm -f pkg/.gitignore

echo "== npm pack --dry-run (what the package ships)"
(cd pkg && npm pack --dry-run 2>&1 | sed -n '/Tarball Contents/,/Tarball Details/p')
ls -l pkg/nse_bg.wasm | awk '{printf "wasm: %.1f MB (%d bytes)\n", $5/1e6, $5}'
