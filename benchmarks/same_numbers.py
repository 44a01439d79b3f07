"""Every shipped study config, on reduced settings: a digest of each run's ``measure/results.json``.

For changes that must not move a number (a layout move, a refactor): run it before and after,
with ``--out`` pointing at two files, and compare them (``--compare A B``). Reduced settings keep a
whole pass to minutes on a laptop: fewer images, a few epochs, one repeat, fewer bootstrap and
permutation draws; a sweep keeps its first two settings. The photograph configs read the COCO
folder ``make photos`` writes; it is generated here (smaller) when absent.

    python benchmarks/same_numbers.py --out /tmp/before.json
    python benchmarks/same_numbers.py --out /tmp/after.json
    python benchmarks/same_numbers.py --compare /tmp/before.json /tmp/after.json

``--only quickstart-vlm.yaml,photos-vlm.yaml`` runs only those configs.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDUCED = ["train.epochs=3", "measure.bootstrap=50", "measure.permutations=50", "repeats=1"]
SMALLER = {"data.num_images": 600}  # for configs that generate their data
PHOTOS = "runs/photo-coco"
log = logging.getLogger("same_numbers")


def overrides(path: str) -> list[str]:
    cfg = yaml.safe_load(open(path))
    out = list(REDUCED)
    if (cfg.get("data") or {}).get("source", "synthetic") == "synthetic":
        out += [f"{k}={v}" for k, v in SMALLER.items()]
    sweep = cfg.get("sweep") or {}
    if sweep:
        key, values = next(iter(sweep.items()))
        out.append("sweep={%s: %s}" % (key, json.dumps(values[:2])))
        out.remove("train.epochs=3") if key == "train.epochs" else None
    return out


def dejavu(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"dejavu {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def run_all(out_json: str, only: list[str]) -> None:
    if not os.path.exists(os.path.join(ROOT, PHOTOS)):
        dejavu("data", "synth", "--format", "coco", "--num", "400", "--output", PHOTOS, "--overwrite", "--set",
               "data.background=photo", "--set", "data.size_range=[0.5, 2.0]", "--set", "data.image_size=48",
               "--set", "data.num_classes=5", "--set", "data.objects_per_image=[1, 3]", "--set",
               "data.cooccurrence=0.3", "--set", "data.shard_size=250")
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))):
            if os.path.basename(path).startswith("cluster-") or (only and os.path.basename(path) not in only):
                continue
            name = os.path.basename(path)
            sets = [a for o in overrides(path) for a in ("--set", o)]
            dejavu("run", os.path.relpath(path, ROOT), "--output", os.path.join(tmp, name), *sets)
            found = sorted(glob.glob(os.path.join(tmp, name, "**", "measure", "results.json"), recursive=True))
            digests[name] = {os.path.relpath(f, os.path.join(tmp, name)): hashlib.sha256(open(f, "rb").read()).hexdigest()
                             for f in found}
            log.info("%s: %d results file(s)", name, len(found))
    with open(out_json, "w") as fh:
        json.dump(digests, fh, indent=1, sort_keys=True)


def compare(a: str, b: str) -> int:
    x, y = json.load(open(a)), json.load(open(b))
    differ = [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    for k in differ:
        log.info("differs: %s", k)
    log.info("%d config(s), %d differ", len(set(x) | set(y)), len(differ))
    return 1 if differ else 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--compare", nargs=2)
    p.add_argument("--only", default="", help="comma-separated config file names (default: every config)")
    args = p.parse_args()
    if args.compare:
        return compare(*args.compare)
    run_all(args.out, [c for c in args.only.split(",") if c])
    return 0


if __name__ == "__main__":
    sys.exit(main())
