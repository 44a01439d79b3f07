"""An object store that goes away in the middle of a study, through a TCP proxy in front of the
local S3 server (the server keeps its objects; the network to it is cut): an outage in the embed
stage that lasts ends the command with one line; the rerun resumes from the last finished stage,
rides out a short outage of its own by the storage layer's retries (counted in the report), and
ends with the same numbers as a run no outage touched (the same config on local disk)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tcp_proxy import Proxy
from test_cli_errors import assert_one_line_error
from test_object_storage import ROOT, _free_port

BUCKET = "outage"
# The first upload of an embedding file: the embed stage is under way, its earlier stages done.
EMBED_UPLOAD = rb"^PUT /%s/[^ ]*/embed/[^ ]*\.parquet" % BUCKET.encode()


@pytest.fixture(scope="module")
def store():
    import boto3

    port = _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    deadline = time.time() + 30
    while True:
        try:
            direct.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    proxy = Proxy(port)
    try:
        yield proxy, direct, {**creds, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    finally:
        proxy.down()
        server.terminate()
        server.wait(timeout=10)


def study(env: dict, prefix: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", "run", "configs/tiny.yaml", "--output",
                           f"s3://{BUCKET}/{prefix}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": ROOT, **env, **extra_env})


def report(direct, prefix: str) -> dict:
    keys = [o["Key"] for o in direct.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")["Contents"]]
    key = next(k for k in keys if k.endswith("/report/report.json"))
    return json.loads(direct.get_object(Bucket=BUCKET, Key=key)["Body"].read())


@pytest.fixture(scope="module")
def undisturbed(tiny_pair):
    """The same config's report from a run on local disk that no outage touched (the tiny_pair
    fixture's first run): where the outputs are stored does not change a number."""
    assert tiny_pair[0].returncode == 0, tiny_pair[0].stderr
    with open(os.path.join(tiny_pair[0].run_dir, "report", "report.json")) as fh:
        return json.load(fh)


def test_a_lasting_outage_ends_in_one_line_and_the_rerun_rides_out_a_short_one(store, undisturbed):
    """A store that stays down fails the study in one line; the rerun resumes at the stage it
    failed in, where a short outage of its own is retried and counted, and ends with the numbers
    of a run no outage touched."""
    proxy, direct, env = store
    proxy.down_on(EMBED_UPLOAD)  # and it stays down
    failed = study(env, "outage", DEJAVU_STORE_ATTEMPTS="2")
    assert proxy.cuts == 1
    # One line from the command and nothing else: a writing task cut mid-upload may print its own
    # error, which Ray forwards as "(Write pid=...)" lines; those go to run.log, not the console.
    assert_one_line_error(failed, "cannot reach", env["AWS_ENDPOINT_URL"])
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "embed    starting" in failed.stdout and "embed    done" not in failed.stdout

    proxy.up()
    proxy.down_on(EMBED_UPLOAD, for_s=2.0)  # the rerun's first upload: back 2 s later
    resumed = study(env, "outage")
    assert proxy.cuts == 2 and resumed.returncode == 0, resumed.stderr
    for stage in ("data", "splits", "train"):
        assert f"{stage:<8} reusing finished stage" in resumed.stdout
    assert "embed    starting" in resumed.stdout
    assert "object-store request(s) retried after a transient error" in resumed.stdout
    got = report(direct, "outage")
    assert got["store_retries"]["embed"] >= 1  # the stage said how many requests it retried
    assert undisturbed["store_retries"] == dict.fromkeys(undisturbed["store_retries"], 0)
    assert got["results"] == undisturbed["results"]
