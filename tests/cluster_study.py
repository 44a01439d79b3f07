"""The reduced study the cluster tests run (tests/test_ray_up.py through jobs on a launched
cluster, tests/test_ray_up_nodes.py on a multi-node cluster that loses a node): one config, so a
run on one cluster is the other's undisturbed reference. The two models train side by side on one
1-CPU worker each: more than the multi-node test's 1-CPU head holds."""
from __future__ import annotations


def study_args(output: str, name: str) -> list[str]:
    sets = [f"name={name}", "train.epochs=2", "train.checkpoint_every=1", "train.num_workers=1",
            "train.cpus_per_worker=1", "measure.bootstrap=50", "measure.permutations=50"]
    return ["configs/tiny.yaml", "--output", output, *(a for s in sets for a in ("--set", s))]


def numbers(report: dict) -> dict:
    """What must not depend on the cluster, its faults or resumption: every headline number."""
    return report["headline"]
