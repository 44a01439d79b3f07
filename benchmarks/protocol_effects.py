"""How much each published choice moves a study's numbers: the study with the product's choices,
with each choice of a published protocol switched alone, and with the whole protocol.

    python benchmarks/protocol_effects.py [--config configs/quickstart.yaml] [--protocol dejavu-2023]
        [--output runs/protocol-effects] [--set KEY=VALUE ...]
    python benchmarks/protocol_effects.py --config configs/quickstart-vlm.yaml --protocol vlm-dejavu-2024

Every run shares one run directory (``run_id: protocol-effects`` unless given), so the stages
whose inputs a choice leaves alone are reused (training, for all but ``data.resize``; the whole
protocol's run after it reuses that one's training); the choices that change training are run last. Prints, per run, the headline gaps at
q = 1 and at the smallest q of the projector's and backbone's positive control (target minus
reference accuracy, 95 % bootstrap interval, paired-swap p-value; for the VLM study PPG and AUCG of
the run's headline entry and the sample level's F gap over the top 10 %) and the attacked
records, as a Markdown table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gaps(report) -> dict:
    """SSL: {representation: (gap at q = 1, gap at the smallest q, records)} of the positive
    control; VLM: {space: (PPG, AUCG of the headline entry, the F gap of the sample level's top
    10 % by max_pred_gap, records)} of the positive control, with the null control's PPG."""
    results, out = report.data["results"], {}
    if "spaces" in results:
        key = results["headline_key"]
        for space, controls in results["spaces"].items():
            e = (controls.get("positive") or {}).get(key)
            if e:
                top = next((r for r in e["sample_level"] if r.get("ranking", "max_pred_gap") == "max_pred_gap"
                            and r["fraction"] == 0.1), None)
                null = (controls.get("null") or {}).get(key)
                out[space] = {"ppg": e["ppg"], "aucg": e["aucg"], "f@0.1": {"value": top["f_gap"]} if top else None,
                              "null ppg": null["ppg"] if null else None, "n": sum(e["n"])}
        return out
    for rep, controls in results.items():
        pos = controls.get("positive")
        if not pos:
            continue
        by_q = sorted(pos["top1"]["by_q"], key=lambda e: e["q"])
        out[rep] = {"q1": by_q[-1]["gap"], f"q{by_q[0]['q']:g}": by_q[0]["gap"], "n": sum(pos["top1"].get("n", []))}
    return out


def _cell(gap: dict | None) -> str:
    from study.report.pvalues import p_is

    if gap is None:
        return "-"
    if "ci" not in gap:  # a point value (the sample level's)
        return f"{gap['value']:+.3f}"
    return f"{gap['value']:+.3f} [{gap['ci'][0]:+.3f}, {gap['ci'][1]:+.3f}] {p_is(gap)}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs/quickstart.yaml"))
    p.add_argument("--protocol", default="dejavu-2023")
    p.add_argument("--output", default=os.path.join(ROOT, "runs", "protocol-effects"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    import study
    from study.config.protocols import preset
    from study.config_load import config_to_dict, load_config

    logging.getLogger("ray").setLevel(logging.WARNING)
    base = load_config(args.config, args.overrides)
    choices = preset(args.protocol, config_to_dict(base))
    retrain = ("data.",)  # choices that change the records or their model inputs: trained again
    ordered = sorted(choices.items(), key=lambda kv: kv[0].startswith(retrain))
    runs = [("product's choices", [])] + [(f"{k}: {v}", [f"{k}={json.dumps(v)}"]) for k, v in ordered] + \
        [(f"protocol: {args.protocol}", [f"protocol={args.protocol}"])]
    if not any(o.startswith("run_id=") for o in args.overrides):
        args.overrides.append("run_id=protocol-effects")
    rows = []
    for name, extra in runs:
        report = study.run(args.config, [*args.overrides, *extra], output=args.output)
        rows.append({"run": name, "gaps": _gaps(report)})
    reps = sorted({r for row in rows for r in row["gaps"]})
    keys = [k for k in rows[0]["gaps"][reps[0]] if k != "n"]
    print(f"\n{os.path.relpath(args.config, ROOT)} {' '.join(args.overrides)}: positive control, gap with 95 % interval "
          f"and p-value, each choice of {args.protocol} alone, then all")
    head = ["run"] + [f"{r} {k}" for r in reps for k in keys] + [f"{r} records" for r in reps]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        g = row["gaps"]
        cells = [_cell(g[r][k]) if r in g else "-" for r in reps for k in keys] + [str(g[r]["n"]) if r in g else "-"
                                                                                 for r in reps]
        print("| " + " | ".join([row["run"], *cells]) + " |")
    print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
