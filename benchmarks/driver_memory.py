"""The driver's peak memory and each stage's time for one study at two sizes, N and 10·N records.

    python benchmarks/driver_memory.py [--sizes 20000 200000] [--config configs/quickstart-vlm.yaml]

For each size: ``dejavu data synth --format webdataset`` writes img2dataset-style tar shards and
the side table of objects; a Ray instance is started apart (``ray start --head``), so the study's
driver process (``dejavu run``) holds only the driver; its peak resident memory (Linux's VmHWM)
is read every 0.1 s while the study runs with reduced training. Prints, per size, the driver's
peak RSS and the stages' seconds, then the ratio of the peaks (the goal: at most 1.2x while N grows 10x).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.dirname(sys.executable)
REDUCED = [
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.checkpoint_every=1",
    "measure.bootstrap=200",
    "measure.permutations=200",
    "measure.utility_records=200",
    "report.gallery_size=4",
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss(cmd: list[str], env: dict) -> tuple[int, float]:
    """Run ``cmd``; return (exit status, peak RSS of its process in MiB)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    hwm = next(line for line in fh if line.startswith("VmHWM:"))
                peak[0] = max(peak[0], int(hwm.split()[1]) * 1024)
            except (OSError, StopIteration):
                break
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    proc.wait()
    sampler.join()
    if proc.returncode:
        print(out[-4000:])
    return proc.returncode, peak[0] / 2**20


def run_size(n: int, config: str, work: str, env: dict, extra: list[str]) -> dict:
    data = os.path.join(work, f"wds-{n}")
    start = time.perf_counter()
    subprocess.run([os.path.join(BIN, "dejavu"), "data", "synth", "--format", "webdataset", "--num", str(n),
                    "--output", data], env=env, check=True, stdout=subprocess.DEVNULL)
    synth_s = time.perf_counter() - start
    out = os.path.join(work, f"out-{n}")
    overrides = ["data.source=webdataset", f"data.path={data}", f"data.objects={os.path.join(data, 'objects.parquet')}",
                 f"data.num_images={n}", *REDUCED, *extra]
    cmd = [os.path.join(BIN, "dejavu"), "run", config, "--output", out]
    for o in overrides:
        cmd += ["--set", o]
    start = time.perf_counter()
    status, peak = _peak_rss(cmd, env)
    total = time.perf_counter() - start
    if status:
        raise SystemExit(f"the study at N={n} failed (exit {status})")
    (run_dir,) = [os.path.join(r, "timings.json") for r, _, files in os.walk(out) if "timings.json" in files]
    with open(run_dir) as fh:
        stages = json.load(fh)
    return {"n": n, "synth_s": round(synth_s, 1), "study_s": round(total, 1), "driver_peak_mib": round(peak, 1),
            "stages_s": {k: round(v, 1) for k, v in stages.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000])
    p.add_argument("--config", default="configs/quickstart-vlm.yaml")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        port = _free_port()  # its own address: "auto" could find another cluster on this machine
        subprocess.run([os.path.join(BIN, "ray"), "start", "--head", f"--num-cpus={args.cpus}", "--include-dashboard=false",
                        "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={os.path.join(work, 'ray')}"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        try:
            rows = [run_size(n, args.config, work, env, args.overrides) for n in args.sizes]
        finally:
            subprocess.run([os.path.join(BIN, "ray"), "stop", "--force"], env=env, stdout=subprocess.DEVNULL)
    stages = list(rows[0]["stages_s"])
    print(f"\n{'records':>10}{'driver peak MiB':>17}{'study s':>9}  " + "".join(f"{s:>9}" for s in stages))
    for r in rows:
        print(f"{r['n']:>10}{r['driver_peak_mib']:>17.1f}{r['study_s']:>9.1f}  "
              + "".join(f"{r['stages_s'].get(s, 0):>9.1f}" for s in stages))
    ratio = rows[1]["driver_peak_mib"] / rows[0]["driver_peak_mib"]
    print(f"driver peak ratio {ratio:.2f} while records grow {rows[1]['n'] / rows[0]['n']:.0f}x (goal <= 1.2)")
    print(json.dumps({"rows": rows, "peak_ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
