#!/usr/bin/env python3
"""Keeps what an unfinished seq2000 run has measured so far.

A run of scripts/study-seq2000.sh takes 2–3 hours per method on this project's two-core
machines, and a session that ends before it does loses its resume state (the patch it resumes
from grows by ~17 MB per batch of 100 and is not committed). This reads the run's resume.json
and writes its checkpoints' aggregates (the teacher-forced and realistic metrics, fluency,
perplexity, ‖ΔW‖ per layer, seconds) with the run's fingerprint, small enough to commit:

    python3 docs/results/seq2000/partial/extract.py artifacts/eval/seq2000-nse \
        > docs/results/seq2000/partial/nse-<commit>.json
"""
import json
import sys


def main(run_dir):
    with open(f"{run_dir}/resume.json") as f:
        saved = json.load(f)
    current = saved.get("current") or {}
    done = current.get("done") or {}

    def view(e, edits):
        c = e.get("collapse") or {}
        return {
            "edits": edits,
            "n_cases": e.get("n_cases"),
            "agg": e.get("agg"),
            "fluency_ngram_entropy": (e.get("fluency") or {}).get("ngram_entropy"),
            "wikitext_ppl": c.get("wikitext_ppl"),
            "dw_fro": {str(l["layer"]): l["dw_fro"] for l in c.get("layers", [])},
            "seconds": e.get("seconds"),
        }

    out = {
        "what": "checkpoints of an unfinished `nse eval` run (scripts/study-seq2000.sh), "
        "extracted from its resume.json by extract.py",
        "argv": saved.get("argv"),
        "fingerprint": saved.get("fingerprint"),
        "method": current.get("method"),
        "batches_done": len(done.get("batches", [])),
        "batch_seconds": [b.get("seconds") for b in done.get("batches", [])],
        "batch_mean_residual_left": [
            (lambda r: sum(r) / len(r) if r else None)((b.get("rounds") or [{}])[-1].get("residual_norms", []))
            for b in done.get("batches", [])
        ],
        "pre": view(saved.get("pre") or {}, 0),
        "checkpoints": [view(c["eval"], c["edits"]) for c in done.get("checkpoints", [])],
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
