"""Object storage through a real S3-compatible server on 127.0.0.1 (moto's standalone server):
the ``s3_env`` fixture other modules use, and the storage helpers. The whole study on object
storage runs as Ray jobs on a launched cluster in tests/test_ray_up.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "dejavu-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_or_s3(request, tmp_path, name: str) -> str:
    """The body of a fixture parametrized ``["local", "s3"]``: a local directory, or a prefix of
    the test's own on the local S3 server (``s3_env``)."""
    if request.param == "local":
        return str(tmp_path / name)
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{name}-{request.node.name.replace('[', '-').rstrip(']')}"


@pytest.fixture(scope="module")
def s3_env():
    port = _free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    # fsspec caches one S3 filesystem per set of arguments, with the endpoint it saw first: a
    # module that reuses the fixture after another module's server stopped must not get that one.
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        import boto3

        deadline = time.time() + 30
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_storage_helpers_round_trip(s3_env, tmp_path):
    from study import storage

    for root in (f"s3://{BUCKET}/helpers", str(tmp_path / "helpers")):
        storage.write_json(storage.join(root, "a", "x.json"), {"n": 1})
        with storage.open_atomic(storage.join(root, "b.bin")) as fh:
            fh.write(b"abc")
        assert storage.read_json(storage.join(root, "a", "x.json")) == {"n": 1}
        assert storage.read_bytes(storage.join(root, "b.bin")) == b"abc"
        files = storage.list_files(root)
        assert sorted(f.rsplit("/", 1)[-1] for f in files) == ["b.bin", "x.json"]
        assert all(f.startswith("s3://") for f in files) == root.startswith("s3://")
        storage.remove(root)
        assert not storage.exists(storage.join(root, "b.bin"))
