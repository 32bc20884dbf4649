#!/usr/bin/env python3
"""Summarises the reference covariance matrices into reference-150k.json.

The reference run's statistics (five float32 1536 x 1536 .npy files, 46 MB) are too large to
commit, so the tests compare the statistic that scripts/setup.sh computes from the same corpus
against these figures instead: trace, Frobenius norm, top-left 4x4 block and first 8 diagonal
entries per layer, each summed in float64, plus the sha256 of the file they were computed from.

Usage: python3 make_reference_figures.py DIR_WITH_layerN.npy > reference-150k.json
(needs numpy; the figures committed here came from the team's reference run, see ../README.md).
"""
import hashlib
import json
import pathlib
import sys

import numpy as np


def figures(path: pathlib.Path) -> dict:
    c = np.load(path)
    assert c.dtype == np.float32 and c.ndim == 2 and c.shape[0] == c.shape[1], path
    c64 = c.astype(np.float64)
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "shape": list(c.shape),
        "trace": float(np.trace(c64)),
        "frobenius": float(np.sqrt(np.sum(c64 * c64))),
        "block4x4": c64[:4, :4].tolist(),
        "diag_first8": np.diag(c64)[:8].tolist(),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = pathlib.Path(sys.argv[1])
    files = sorted(src.glob("layer*.npy"), key=lambda p: int(p.stem[len("layer"):]))
    if not files:
        sys.exit(f"no layer*.npy in {src}")
    out = {
        "what": "the reference covariance statistics C_l over the first 150,000 tokens of "
        "wikitext-2-raw test (1024-token windows per article), summarised",
        "budget_tokens": 150000,
        "layers": {p.stem[len("layer"):]: figures(p) for p in files},
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
