"""Webdataset tar shards read member by member, so a damaged shard loses only what is damaged.

A shard's members group into samples by key (the member's path up to the first dot of its file
name: ``dir/000123.jpg`` and ``dir/000123.txt`` are sample ``dir/000123``, as webdataset names
them). Reading stops at the first member whose header or data cannot be read (a tar has no index:
nothing after a damaged header can be found). Then:

- the samples read before it are kept;
- the member being read, when its header named it, is quarantined as ``unreadable``;
- a shard whose first header is unreadable (not a tar at all), or that does not end with the
  tar format's end-of-archive blocks (cut short: members after the cut cannot be known), is also
  quarantined as one entry, ``file:<shard name>``, so the count shows it instead of losing
  records silently.

Written by hand because Ray's webdataset reader fails the whole dataset on one damaged shard.
"""
from __future__ import annotations

import io
import posixpath
import tarfile

import pyarrow as pa

from study.core.quality import UNREADABLE
from study.data.records import STATUS

KEY = "__key__"
END_OF_ARCHIVE = b"\0" * 1024  # two zero blocks close every tar (tar pads the archive after them with zeros)


def split_name(name: str) -> tuple[str, str]:
    """Member path -> (sample key, suffix): everything up to the file name's first dot, the rest."""
    folder, base = posixpath.split(name)
    stem, _, suffix = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, suffix.lower()


def tar_samples(data: bytes, shard: str) -> tuple[list[dict], list[str]]:
    """(samples {"__key__", <suffix>: bytes}, ids to quarantine as unreadable) of one shard's bytes."""
    samples: dict[str, dict] = {}
    bad: list[str] = []
    read_any = False
    tar = None
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r|")
        for member in tar:
            read_any = True
            if not member.isfile():
                continue
            key, suffix = split_name(member.name)
            try:
                body = tar.extractfile(member).read()
                if len(body) != member.size:
                    raise EOFError("member data ends early")
            except (tarfile.TarError, OSError, EOFError):
                bad.append(posixpath.basename(key))
                samples.pop(key, None)
                break
            samples.setdefault(key, {KEY: key})[suffix] = body
    except (tarfile.TarError, OSError, EOFError):  # a header that cannot be read: nothing after it is found
        read_any = False
    finally:
        if tar is not None:
            try:
                tar.close()
            except (tarfile.TarError, OSError, EOFError):
                pass
    if not read_any or not data.endswith(END_OF_ARCHIVE):
        bad.append(f"file:{posixpath.basename(shard)}")
    return list(samples.values()), bad


def shard_rows(batch: pa.Table, to_records) -> pa.Table:
    """Binary-file rows (``bytes``, ``path``) of whole shards -> records with a read status:
    ``to_records`` maps the samples (a table like ``webdataset_batch`` takes); the unreadable ones
    are appended with a null image and the ``unreadable`` status."""
    tables = []
    for data, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist()):
        samples, bad = tar_samples(data, path)
        if samples:
            suffixes = sorted({s for sample in samples for s in sample if s != KEY})
            cols = {KEY: [s[KEY] for s in samples], **{x: [s.get(x) for s in samples] for x in suffixes}}
            tables.append(to_records(pa.table({k: (v if k == KEY else pa.array(v, pa.binary())) for k, v in cols.items()})))
        if bad:
            tables.append(unreadable_rows(bad, tables[0].schema if tables else None))
    return pa.concat_tables(tables, promote_options="default") if tables else unreadable_rows([], None)


def unreadable_rows(ids: list[str], schema: pa.Schema | None) -> pa.Table:
    n = len(ids)
    table = pa.table({"id": pa.array(ids, pa.string()), "image": pa.nulls(n, pa.binary()),
                      "width": pa.nulls(n, pa.int32()), "height": pa.nulls(n, pa.int32()),
                      "caption": pa.nulls(n, pa.string()), STATUS: pa.array([UNREADABLE] * n, pa.string())})
    return table.select(schema.names) if schema is not None else table
