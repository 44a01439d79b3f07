"""Storage and cluster mistakes end in one ``error:`` line with nothing written and no bucket made:
a mistyped bucket, denied writes, missing credentials and an endpoint that does not answer (on
the local S3 server), a Ray address where nothing listens, GPUs asked of a machine without one,
and a local output root on a cluster of two raylets whose temporary directories differ."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from test_cli_errors import assert_one_line_error, dejavu, dejavu_here
from test_object_storage import BUCKET, ROOT, _free_port, s3_env  # noqa: F401  (the moto server fixture)

from study import storage
from study.errors import StudyError
from study.preflight import check_inputs, check_output

MISSING = "no-such-bucket"


def buckets() -> list[str]:
    import boto3

    return sorted(b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"])


@pytest.mark.parametrize("command", [
    ["run", "configs/tiny.yaml", "--output", f"s3://{MISSING}/studies"],
    ["data", "synth", "--format", "coco", "--num", "10", "--output", f"s3://{MISSING}/synth"],
    ["report", "pull", f"s3://{BUCKET}/nothing/report", f"s3://{MISSING}/pulled"],
])
def test_a_missing_bucket_is_never_created(s3_env, capsys, command):
    before = buckets()
    if command[:2] == ["report", "pull"]:  # a real report to pull, so the destination is what fails
        storage.write_json(f"s3://{BUCKET}/nothing/report/report.json", {"name": "x"})
    proc = dejavu_here(capsys, *command)
    assert_one_line_error(proc, f"'{MISSING}' does not exist", "never creates", f"s3 mb s3://{MISSING}")
    assert buckets() == before


@pytest.mark.parametrize("command", [["report", "list", f"s3://{MISSING}/studies"],
                                     ["report", f"s3://{MISSING}/studies/run-1"],
                                     ["data", "inspect", f"s3://{MISSING}/records"]])
def test_reading_from_a_missing_bucket_says_so(s3_env, capsys, command):
    before = buckets()
    assert_one_line_error(dejavu_here(capsys, *command), "does not exist", f"no bucket '{MISSING}'")
    assert buckets() == before


def test_the_storage_layer_makes_no_bucket(s3_env):
    before = buckets()
    storage.makedirs(f"s3://{MISSING}/a/b")
    with pytest.raises(FileNotFoundError):
        storage.write_bytes(f"s3://{MISSING}/a/b/c.json", b"{}")
    assert buckets() == before and not storage.exists(f"s3://{MISSING}")


def test_a_denied_write_is_one_line_and_leaves_nothing(s3_env, capsys):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="read-only")
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                    "Resource": "arn:aws:s3:::read-only/*"}]}
    s3.put_bucket_policy(Bucket="read-only", Policy=json.dumps(deny))
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", "s3://read-only/studies")
    assert_one_line_error(proc, "s3://read-only/studies", "access denied", "bucket policy")
    assert s3.list_objects_v2(Bucket="read-only").get("KeyCount", 0) == 0


def test_an_unreachable_endpoint_answers_in_seconds(s3_env, capsys, monkeypatch):
    import s3fs

    closed = _free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    s3fs.S3FileSystem.clear_instance_cache()
    start = time.monotonic()
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", f"s3://{BUCKET}/studies")
    assert_one_line_error(proc, f"s3://{BUCKET}/studies", "cannot reach", f"127.0.0.1:{closed}")
    assert time.monotonic() - start < 20
    with pytest.raises(StudyError, match="data.path: .*cannot reach"):
        check_inputs({"data.path": f"s3://{BUCKET}/records"})
    s3fs.S3FileSystem.clear_instance_cache()


def test_credentials_the_store_refuses(s3_env, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    tmp = tempfile.mkdtemp()
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(tmp, "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(tmp, "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", f"s3://{BUCKET}/studies")
    s3fs.S3FileSystem.clear_instance_cache()
    assert_one_line_error(proc, "no credentials for object storage", "AWS_ACCESS_KEY_ID")


def test_a_writable_output_and_present_inputs_pass(s3_env, tmp_path):
    check_output(f"s3://{BUCKET}/fresh/prefix")
    assert storage.list_files(f"s3://{BUCKET}/fresh") == []  # the probe is gone
    check_output(str(tmp_path / "not" / "yet" / "made"))
    assert not (tmp_path / "not").exists()  # nothing is made before the study writes
    with pytest.raises(StudyError, match="data.objects: .* does not exist"):
        check_inputs({"data.path": str(tmp_path), "data.objects": str(tmp_path / "objects.parquet")})


def test_a_ray_address_where_nothing_listens(tmp_path):
    closed = _free_port()
    start = time.monotonic()
    proc = dejavu("run", "configs/tiny.yaml", "--output", str(tmp_path / "runs"), "--set",
                  f"ray.address=127.0.0.1:{closed}", tmp_path=tmp_path)
    assert_one_line_error(proc, f"ray.address=127.0.0.1:{closed}", "nothing answers")
    assert time.monotonic() - start < 60 and not (tmp_path / "runs").exists()


def test_gpus_asked_of_a_machine_without_one(tmp_path):
    proc = dejavu("run", "configs/tiny.yaml", "--output", str(tmp_path / "runs"), "--set", "ray.use_gpu=true",
                  tmp_path=tmp_path)
    assert_one_line_error(proc, "training asks for CPU 1, GPU 1", "no node", "node 1: CPU")
    assert not (tmp_path / "runs").exists()


def test_a_local_output_on_two_raylets_is_refused(tmp_path):
    """Two raylets on this machine, each with its own temporary directory: the check counts nodes,
    it does not look for a shared /tmp."""
    import ray
    from ray.cluster_utils import Cluster

    from study.frame import cluster as checks

    temp = [tempfile.mkdtemp(prefix=f"raylet{i}-") for i in range(2)]
    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp[0],
                                                        "include_dashboard": False})
    try:
        two.add_node(num_cpus=1, temp_dir=temp[1])
        two.wait_for_nodes()
        proc = dejavu("run", "configs/tiny.yaml", "--output", str(tmp_path / "runs"), "--set",
                      f"ray.address={two.address}", tmp_path=tmp_path)
        assert_one_line_error(proc, f"output: {tmp_path / 'runs'} is a local path", "has 2 nodes",
                              "ray.shared_paths=true")
        assert not (tmp_path / "runs").exists()
        ray.init(address=two.address)
        try:
            checks.check_paths({"output": str(tmp_path)}, shared=True)  # declared shared: allowed
            checks.check_paths({"output": f"s3://{BUCKET}/x", "data.path": None}, shared=False)
            with pytest.raises(StudyError, match="data.path: /data/records is a local path"):
                checks.check_paths({"output": f"s3://{BUCKET}/x", "data.path": "/data/records"}, shared=False)
            # A joined cluster may grow: the autoscaler is asked, and the wait is bounded.
            said: list[str] = []
            gpu = {"CPU": 1.0, "GPU": 1.0}
            with pytest.raises(StudyError, match=r"training asks for CPU 1, GPU 1 per worker, .* after waiting 2 s"):
                checks.check_resources(gpu, "training", False, 2, said.append)
            assert "asking the autoscaler" in said[0]
            ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
            grown = subprocess.Popen([ray_cli, "start", f"--address={two.address}", "--num-cpus=1", "--num-gpus=1",
                                      "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:  # a node that can hold it joins while the study waits
                start = time.monotonic()
                checks.check_resources(gpu, "training", False, 120, said.append)
                assert time.monotonic() - start < 100
            finally:
                grown.terminate()
                grown.wait(timeout=60)
        finally:
            ray.shutdown()
    finally:
        two.shutdown()


def _listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:port (the head's GCS is up)."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_cluster_that_refuses_the_token(tmp_path):
    """A head started with token authentication (``ray start``, a process of its own, as a user
    starts one) and a client holding another token."""
    import secrets

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", f"--temp-dir={tempfile.mkdtemp(prefix='tokenhead-')}"],
                            env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Ray's own retries of a refused join (20, a second apart) cut to 3: what is tested is what
        # the command says once Ray gives up, not how long Ray tries.
        refused = subprocess.run([sys.executable, "-m", "study.cli", "run", "configs/tiny.yaml", "--output",
                                  str(tmp_path / "runs"), "--set", f"ray.address=127.0.0.1:{port}"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=180,
                                 env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_NUM_REDIS_GET_RETRIES": "3"})
    finally:
        head.terminate()  # ``ray start --block`` stops the processes it started
        head.wait(timeout=60)
    assert_one_line_error(refused, f"ray.address=127.0.0.1:{port}", "the cluster refused this machine's token")
    assert "InvalidAuthToken" not in refused.stderr  # Ray's retry warnings, held back while joining
    assert not (tmp_path / "runs").exists()


def _dashboard_serving() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 8265)) == 0


def test_a_local_output_in_a_ray_job_is_refused(monkeypatch, tmp_path):
    """On the study's own instance, started without its dashboard (``ray.dashboard=false``: Ray's
    default starts it, port 8265, by the time ``ray.init`` returns)."""
    import ray

    from study.config import RayConfig
    from study.frame import cluster as checks

    assert not _dashboard_serving()  # no other instance's dashboard on this machine
    checks.join(RayConfig(num_cpus=2, dashboard=False))
    monkeypatch.setenv(checks.JOB_ENV, "{}")  # what Ray's job supervisor sets for an entrypoint
    try:
        time.sleep(2)
        assert not _dashboard_serving()
        with pytest.raises(StudyError, match="runs as a Ray job"):
            checks.check_paths({"output": str(tmp_path)}, shared=False)
    finally:
        ray.shutdown()

