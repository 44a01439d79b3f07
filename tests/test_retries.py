"""The storage layer's retries of transient object-store errors (study/retries.py): a request
that meets a store gone for a moment succeeds once it is back, and the retry is counted; the
counting changes nothing in what a user's logging shows."""
from __future__ import annotations

import io
import logging
import threading

import pytest

from tcp_proxy import Proxy
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server, a module fixture)

from study import retries, storage


@pytest.fixture
def behind_proxy(s3_env, monkeypatch):
    """The local S3 server reached through a proxy the test can cut."""
    import s3fs

    port = int(s3_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    proxy = Proxy(port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    s3fs.S3FileSystem.clear_instance_cache()
    yield proxy
    proxy.down()
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_short_outage_is_ridden_out_and_counted(behind_proxy):
    uri = f"s3://{BUCKET}/retries/blob.bin"
    storage.write_bytes(uri, b"x" * 1000)
    before = retries.count()
    behind_proxy.down()
    threading.Timer(2.0, behind_proxy.up).start()
    assert storage.read_bytes(uri) == b"x" * 1000  # the read waited for the store to come back
    assert retries.since(before) >= 1


def test_a_store_that_stays_down_fails_after_the_last_attempt(behind_proxy, monkeypatch):
    import fsspec.config
    import s3fs

    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"retries": {"mode": "standard", "max_attempts": 3}}})
    s3fs.S3FileSystem.clear_instance_cache()
    uri = f"s3://{BUCKET}/retries/gone.bin"
    storage.write_bytes(uri, b"y")
    before = retries.count()
    behind_proxy.down()
    with pytest.raises(Exception) as failed:
        storage.read_bytes(uri)
    assert "EndpointConnectionError" in repr(failed.value) or "Could not connect" in str(failed.value), failed.value
    assert retries.since(before) >= 2  # every attempt but the first is a retry


def test_the_s3_policy_is_the_users_when_they_set_one(monkeypatch):
    import fsspec.config

    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    retries.install()
    assert fsspec.config.conf["s3"]["config_kwargs"]["retries"] == {"mode": "standard", "max_attempts": retries.ATTEMPTS}
    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    retries.install()
    assert "config_kwargs" not in fsspec.config.conf["s3"]


def test_counting_shows_a_user_no_debug_lines_and_keeps_theirs():
    retries.install()
    endpoint = logging.getLogger("botocore.endpoint")
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)  # level NOTSET: shows whatever reaches it
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        before = retries.count()
        endpoint.debug("Response received to retry, sleeping for %s seconds", 0.5)
        endpoint.debug("Sending http request: %s", "<request>")
        endpoint.warning("a warning of the client's")
        assert retries.since(before) == 1
        assert seen.getvalue() == "a warning of the client's\n"  # root's level (WARNING) as before
        logging.getLogger("botocore").setLevel(logging.DEBUG)  # a user who asks for the client's debug
        endpoint.debug("Sending http request: %s", "<request>")
        assert "Sending http request" in seen.getvalue()
    finally:
        logging.getLogger("botocore").setLevel(logging.NOTSET)
        root.removeHandler(handler)
