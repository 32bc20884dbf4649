#!/usr/bin/env python3
"""Why the methods of seq2000 end where they do: what each batch's solve saw and did.

Reads finished `nse eval` reports (the gunzipped `runs/*.report.json`) and prints, as markdown,
per method and for batches 1, 5, 10, 15 and 20 of 100 edits:

- the z problem: mean ‖δ‖ = ‖z − h‖ of the batch's targets, mean ‖h‖ (the last edited layer's
  output at the subject's last token, on the model as the earlier batches left it), Adam steps,
  the target probability reached;
- the solve: rounds, the neurons selected per edited layer and the estimated condition number of
  `G` per layer in the first round (`n_selected`, `g_condition` of the report; AlphaEdit's
  projected solve has no `G` of this form and records none), the first round's ‖ΔW‖ at the last
  layer, and the mean ‖z − h‖ left after the batch;
- the cumulative ‖ΔW‖_F of the last edited layer;
and, per checkpoint, the rewrite success of the first batch's cases (what is kept of the oldest
edits) and the teacher-forced and realistic rewrite success of the batch just written (how well
new edits still go in).

    gunzip -k docs/results/seq2000/runs/*.report.json.gz
    python3 docs/results/seq2000/why.py docs/results/seq2000/runs/{nse,memit-seq,memit,alphaedit}-6c0cab6.report.json
"""
import json
import os
import sys


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def fmt(x, nd=1):
    return "–" if x is None else f"{x:,.{nd}f}"


def method_name(path, report):
    return report["methods"][0]["method"] if report.get("methods") else os.path.basename(path)


def main(paths):
    reports = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        reports.append((method_name(p, r), r))

    print("### What each batch's z problem and solve looked like\n")
    print(
        "| method | batch | ‖δ‖ | ‖h‖ | z steps | P(target) | rounds | neurons selected, layers 3–7 "
        "| cond(G), layers 3–7 | round-1 ‖ΔW‖ layer 7 | ‖z − h‖ left | ‖ΔW‖ layer 7 so far |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    for name, r in reports:
        m = r["methods"][0]
        for i in (0, 4, 9, 14, 19):
            if i >= len(m["batches"]):
                continue
            b = m["batches"][i]
            z = b["z"]
            first = b["rounds"][0]["layers"]
            sel = ", ".join(str(l["n_selected"]) for l in first)
            cond = ", ".join(
                f"{l['g_condition']:.0f}" if l.get("g_condition") else "–" for l in first
            )
            last = max(b["dW_fro_cum"], key=int)
            print(
                f"| {name} | {i + 1} | {fmt(mean(z['delta_norms']))} | {fmt(mean(z['h_init_norms']))} "
                f"| {fmt(mean(z['evaluations']))} | {fmt(mean(z['final_prob']), 3)} | {len(b['rounds'])} "
                f"| {sel} | {cond} | {fmt(first[-1]['upd_fro'])} | {fmt(mean(b['residual_after']))} "
                f"| {fmt(b['dW_fro_cum'][last])} |"
            )

    def per_checkpoint(title, pick, metric):
        print(f"\n### {title}\n")
        header = None
        for name, r in reports:
            cps = r["methods"][0]["checkpoints"]
            if header is None:
                header = [c["edits"] for c in cps]
                print("| method | " + " | ".join(f"{e:,}" for e in header) + " |")
                print("| --- |" + " ---: |" * len(header))
            row = []
            for c in cps:
                cases = pick(c["eval"]["per_case"], r["batch_size"])
                row.append(fmt(100 * mean([pc[metric] for pc in cases])))
            print(f"| {name} | " + " | ".join(row) + " |")

    oldest = lambda cases, b: cases[:b]
    newest = lambda cases, b: cases[-b:]
    per_checkpoint(
        "The first batch's cases, re-scored at each checkpoint (rewrite success, %)",
        oldest,
        "rewrite_success",
    )
    per_checkpoint(
        "The batch just written, at each checkpoint (rewrite success, %)", newest, "rewrite_success"
    )
    per_checkpoint(
        "The batch just written, at each checkpoint (realistic rewrite: the new object said, %)",
        newest,
        "rewrite_gen",
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
