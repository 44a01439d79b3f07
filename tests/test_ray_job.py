"""The Ray job entry point, submitted for real: ``ray start --head`` with token authentication
on, then ``ray job submit --working-dir . -- <venv python> ray_jobs/run_study.py CONFIG``."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import signal
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    ports = {name: _free_port() for name in ("gcs", "dashboard", "agent", "metrics")}
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    temp = str(tmp_path_factory.mktemp("ray"))
    start = subprocess.run(
        [os.path.join(BIN, "ray"), "start", "--head", "--num-cpus=2", f"--port={ports['gcs']}",
         f"--dashboard-port={ports['dashboard']}", f"--dashboard-agent-listen-port={ports['agent']}",
         f"--metrics-export-port={ports['metrics']}", "--include-dashboard=true", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield env, f"http://127.0.0.1:{ports['dashboard']}", f"127.0.0.1:{ports['gcs']}"
    finally:
        _stop_cluster(temp)


def _stop_cluster(temp_dir: str) -> None:
    """Stop this test's cluster only (``ray stop`` would stop every Ray instance on the machine):
    its processes are the ones whose command line names its temp directory."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if temp_dir.encode() in fh.read():
                    pids.append(int(pid))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def submit(env: dict, address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
         sys.executable, "ray_jobs/run_study.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_job_without_token_is_refused(ray_head):
    env, address, _ = ray_head
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    no_token["RAY_AUTH_TOKEN_PATH"] = os.devnull
    proc = submit(no_token, address, "configs/tiny.yaml")
    assert proc.returncode != 0
    assert "auth" in (proc.stdout + proc.stderr).lower()


def test_study_runs_as_a_ray_job(ray_head, tmp_path):
    env, address, _ = ray_head
    proc = submit(env, address, "configs/tiny.yaml", "--output", str(tmp_path), "--set", "name=job", "--set", "train.epochs=2", "--set", "measure.bootstrap=50", "--set", "measure.permutations=50")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    reports = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "report.json"]
    assert len(reports) == 1
    with open(reports[0]) as fh:
        report = json.load(fh)
    assert report["name"] == "job" and set(report["headline"]) >= {"projector/positive", "projector/null"}
