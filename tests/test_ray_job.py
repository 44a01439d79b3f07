"""The Ray job entry point, submitted for real: ``ray start --head`` with token authentication
on, then ``ray job submit --working-dir . -- <venv python> ray_jobs/run_study.py CONFIG``.

The job's study writes to a real S3-compatible server on 127.0.0.1 (moto's standalone server,
``test_object_storage.s3_env``): records, checkpoints, embeddings, search results and the report
all live in the bucket, and ``dejavu report s3://...`` reads it back. The credentials come from
the standard environment chain (the cluster's environment); a planted secret must appear in no
output of the run."""
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
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SECRET = "planted-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def ray_head(s3_env, tmp_path_factory):  # noqa: F811
    ports = {name: _free_port() for name in ("gcs", "dashboard", "agent", "metrics")}
    env = {**os.environ, **s3_env, "AWS_SECRET_ACCESS_KEY": SECRET, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
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


def test_study_runs_as_a_ray_job_on_object_storage(ray_head):
    import fsspec

    env, address, _ = ray_head
    out = f"s3://{BUCKET}/jobs"
    proc = submit(env, address, "configs/tiny.yaml", "--output", out, "--set", "name=job", "--set", "train.epochs=2",
                  "--set", "measure.bootstrap=50", "--set", "measure.permutations=50")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    fs = fsspec.filesystem("s3")
    names = fs.find(f"{BUCKET}/jobs/job")
    for needle in ("/report/report.json", "/report/report.html", "/splits/manifest.json", "/train/model_a/model.pt",
                   "/embed/model_b/public/projector/part-00000.parquet",
                   "/search/model_a/target/projector/part-00000.parquet"):
        assert any(n.endswith(needle) for n in names), needle
    report_uri = next(n for n in names if n.endswith("/report/report.json"))
    report = json.loads(fs.cat_file(report_uri))
    assert report["name"] == "job" and set(report["headline"]) >= {"projector/positive", "projector/null"}
    run_dir = "s3://" + report_uri.rsplit("/report/", 1)[0]
    rep = subprocess.run([sys.executable, "-m", "study.cli", "report", run_dir], cwd=ROOT,
                         env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "projector/positive" in rep.stdout and "projector/null" in rep.stdout
    # The credentials appear in no output: every file of the run, the job's log, the report command.
    blobs = [proc.stdout, proc.stderr, rep.stdout, rep.stderr] + [fs.cat_file(n) for n in names]
    assert all(SECRET.encode() not in (b if isinstance(b, bytes) else b.encode()) for b in blobs)
