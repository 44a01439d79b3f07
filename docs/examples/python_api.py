"""A tiny SSL déjà vu study from Python, and a plot of its headline gaps.

    python docs/examples/python_api.py [OUTPUT_ROOT]

Runs configs/tiny.yaml (a minute on a laptop; finished stages are reused when run again), prints
the report's summary, and writes ``gaps.png`` beside the report: per search space and control, the
target-minus-reference accuracy gap with its 95 % bootstrap interval.
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

import study  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "..", "..", "configs", "tiny.yaml")


def plot_gaps(report: study.Report, path: str) -> str:
    """One point per "space/control" (projector/positive, ...): the gap and its interval."""
    rows = sorted(report.headline.items())
    fig, ax = plt.subplots(figsize=(6, 3))
    for i, (_, h) in enumerate(rows):
        lo, hi = h["ci"]
        ax.errorbar(i, h["gap"], yerr=[[h["gap"] - lo], [hi - h["gap"]]], fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=20)
    ax.set_ylabel("target - reference accuracy")
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(output: str = "runs") -> str:
    cfg = study.load_config(CONFIG, output=output)
    report = study.run(cfg)
    print("\n".join(report.summary()))
    png = plot_gaps(report, os.path.join(os.path.dirname(report.uri), "gaps.png"))
    print(f"plot: {png}")
    return png


if __name__ == "__main__":
    main(*sys.argv[1:2])
