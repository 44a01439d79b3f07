"""``storage.open_atomic`` keeps its promise: a writer that raises leaves the target as it was
(absent, or its old bytes) and no temporary behind; one that finishes leaves the whole file. On a
local disk and on a real S3 server (moto's, shared with tests/test_object_storage.py).
"""
from __future__ import annotations

import pytest

from study import storage
from test_object_storage import local_or_s3, s3_env  # noqa: F401  (s3_env: the local S3 server fixture)


class WriterFailed(Exception):
    pass


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    return local_or_s3(request, tmp_path, "atomic")


def everything(root: str) -> list[str]:
    """Every object or file below ``root``, hidden names included (``list_files`` skips them)."""
    fs, path = storage.fs_and_path(root)
    fs.invalidate_cache()
    return sorted(fs.find(path))


def write_then_fail(uri: str, data: bytes) -> None:
    with pytest.raises(WriterFailed):
        with storage.open_atomic(uri) as fh:
            fh.write(data)
            raise WriterFailed


def test_a_failed_write_of_a_new_file_leaves_nothing(root):
    target = storage.join(root, "sub", "new.bin")
    write_then_fail(target, b"partial " * 1000)
    assert not storage.exists(target)
    assert everything(root) == []


def test_a_failed_write_keeps_the_old_file(root):
    target = storage.join(root, "old.bin")
    storage.write_bytes(target, b"old bytes")
    before = everything(root)
    write_then_fail(target, b"new but partial")
    assert storage.read_bytes(target) == b"old bytes"
    assert everything(root) == before  # the target alone: no temporary left


def test_a_finished_write_is_whole_and_alone(root):
    target = storage.join(root, "whole.bin")
    data = bytes(range(256)) * 4099  # ~1 MB, not a multiple of any buffer size
    with storage.open_atomic(target) as fh:
        for i in range(0, len(data), 65536):
            fh.write(data[i:i + 65536])
        assert storage.list_files(root) == []  # nothing visible before the writer finishes
    assert storage.read_bytes(target) == data
    assert [p.rsplit("/", 1)[-1] for p in everything(root)] == ["whole.bin"]
    with storage.open_atomic(target, "w") as fh:  # text mode, replacing
        fh.write("replaced")
    assert storage.read_bytes(target) == b"replaced"
    assert len(everything(root)) == 1
