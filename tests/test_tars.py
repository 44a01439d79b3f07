"""Webdataset shards read member by member (study.data.tars): what a damaged shard keeps and what
it quarantines, on tars built here."""
from __future__ import annotations

import io
import tarfile

import pytest

from study.data.tars import shard_rows, split_name, tar_samples


def make_tar(n: int, stream: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|" if stream else "w") as tar:
        for i in range(n):
            for suffix, data in (("jpg", b"J" * 700), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"shard/k{i:03d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_split_name():
    assert split_name("a/b/000123.jpg") == ("a/b/000123", "jpg")
    assert split_name("000123.seg.PNG") == ("000123", "seg.png")


@pytest.mark.parametrize("stream", [False, True])
def test_a_sound_shard_gives_every_sample(stream):
    samples, bad = tar_samples(make_tar(4, stream), "s.tar")
    assert bad == [] and [s["__key__"] for s in samples] == [f"shard/k{i:03d}" for i in range(4)]
    assert samples[2]["txt"] == b"caption 2" and samples[2]["jpg"] == b"J" * 700


def test_a_shard_cut_inside_a_member_keeps_what_came_before():
    data = make_tar(4)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        third_image = tar.getmembers()[4]
    samples, bad = tar_samples(data[: third_image.offset_data + 100], "x/s.tar")
    assert [s["__key__"] for s in samples] == ["shard/k000", "shard/k001"]
    assert bad == ["k002", "file:s.tar"]


def test_a_file_that_is_not_a_tar_is_one_quarantined_entry():
    assert tar_samples(b"garbage!" * 200, "x/00007.tar") == ([], ["file:00007.tar"])


def test_shard_rows_append_the_unreadable_to_the_records():
    import pyarrow as pa

    def to_records(table):
        return pa.table({"id": table.column("__key__"), "caption": table.column("txt").cast(pa.string())})

    data = make_tar(3)
    batch = pa.table({"bytes": [data, b"nonsense" * 100], "path": ["a/0.tar", "a/1.tar"]})
    out = shard_rows(batch, to_records)
    assert out.column("id").to_pylist() == ["shard/k000", "shard/k001", "shard/k002", "file:1.tar"]
    assert out.column("caption").to_pylist() == ["caption 0", "caption 1", "caption 2", None]
