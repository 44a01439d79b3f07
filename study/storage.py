"""Storage through fsspec: one set of helpers for local paths and object stores (s3://, gs://).

Writes are atomic per file (``open_atomic``): a writer that finishes leaves the whole file, one that
raises leaves what was there before (the old file, or none). Both locally and on object stores the
bytes go to a hidden temporary beside the target (``.<name>.tmp-<id>``, which ``list_files`` and
Arrow's dataset discovery skip) that is moved onto the target only on success. Object-store
endpoints and credentials come from the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
...), so tests can point at a local S3 server.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec
import pyarrow.fs as pafs

from study import retries
from study.errors import StudyError

retries.install()  # transient object-store errors: retried with backoff, counted (study/retries.py)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def join(uri: str, *parts: str) -> str:
    if is_local(uri):
        return os.path.join(uri, *parts)
    return posixpath.join(uri, *parts)


def absolute(uri: str) -> str:
    """Local paths made absolute (Ray workers may run elsewhere); URIs unchanged."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(uri) if is_local(uri) else uri.rstrip("/")


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def list_files(uri: str) -> list[str]:
    """All files below ``uri`` (recursive), as URIs in sorted order."""
    fs, path = fs_and_path(uri)
    if fs.isfile(path):
        return [uri]
    found = sorted(p for p in fs.find(path) if not posixpath.basename(p).startswith(("_", ".")))
    return [p if is_local(uri) else fs.unstrip_protocol(p) for p in found]


@dataclass(frozen=True)
class FileInfo:
    uri: str
    size: int
    modified: dt.datetime | None  # UTC; None where the store does not say


def list_info(uri: str) -> list[FileInfo]:
    """Every file below ``uri`` with its size and modification time, from one recursive listing
    (one paged request on an object store). Unlike ``list_files`` this keeps ``_`` names (stage
    markers); only ``.`` names, temporaries in flight, are left out."""
    fs, path = fs_and_path(uri)
    found = fs.find(path, detail=True)
    return [FileInfo(p if is_local(uri) else fs.unstrip_protocol(p), int(info.get("size") or 0), _modified(info))
            for p, info in sorted(found.items()) if not posixpath.basename(p).startswith(".")]


def _modified(info: dict) -> dt.datetime | None:
    """The modification time in a listing entry: local ``mtime`` (seconds), S3's ``LastModified``,
    GCS's ``updated`` (ISO text)."""
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, dt.timezone.utc)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return None


def makedirs(uri: str) -> None:
    """A local directory and its parents. Object stores have no directories (a key's prefix is
    enough), and s3fs's ``makedirs`` would create a missing bucket: nothing is done there."""
    if is_local(uri):
        os.makedirs(absolute(uri), exist_ok=True)


def remove(uri: str) -> None:
    fs, path = fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def clear_for_writing(uri: str, overwrite: bool) -> None:
    """A command's output location must be empty, or be emptied when the user said --overwrite."""
    if exists(uri) and list_files(uri):
        if not overwrite:
            raise StudyError(f"{uri} already holds files; choose an empty location or pass --overwrite")
        remove(uri)


def _temporary(path: str) -> str:
    """A hidden name beside ``path`` for the bytes in flight."""
    parent, name = posixpath.split(path)
    return posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def open_atomic(uri: str, mode: str = "wb") -> Iterator[Any]:
    """Open for writing so that readers see the whole file or nothing.

    If the body raises, the target keeps what it held before (or stays absent) and the temporary
    is removed; a process killed outright may leave a hidden temporary, never a partial target.
    """
    fs, path = fs_and_path(uri)
    local = is_local(uri)
    parent = posixpath.dirname(path)
    if parent and local:
        os.makedirs(parent, exist_ok=True)
    tmp = _temporary(path)
    try:
        # An object-store file uploads when it is closed, and its context manager closes it on an
        # exception too, which would commit a half-written object. Aborting instead (``discard``)
        # holds only for files opened with ``autocommit=False``, which each fsspec backend
        # implements differently or not at all; a temporary key copied onto the target on success
        # (a server-side copy: the target appears whole, on S3 and GCS alike) works on every one.
        with open(tmp, mode) if local else fs.open(tmp, mode) as fh:
            yield fh
        if local:
            os.replace(tmp, path)
        else:
            fs.cp_file(tmp, path)
    finally:
        # Also after a success on an object store, where the temporary was copied, not renamed. A
        # failure to remove it must not mask the writer's own error (or fail a whole write).
        with contextlib.suppress(Exception):
            if not local or os.path.exists(tmp):
                fs.rm_file(tmp)


def open_read(uri: str):
    fs, path = fs_and_path(uri)
    return fs.open(path, "rb")


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes) -> None:
    with open_atomic(uri, "wb") as fh:
        fh.write(data)


def read_many(uris: list[str]) -> dict[str, bytes | Exception]:
    """The bytes of each file (all on one filesystem), fetched concurrently on object stores; a
    file that cannot be read maps to its exception."""
    if not uris:
        return {}
    fs, _ = fs_and_path(uris[0])
    paths = {fs_and_path(u)[1]: u for u in uris}
    got = fs.cat(list(paths), on_error="return")
    return {paths[p]: data for p, data in got.items()}


def copy_file(src: str, dst: str) -> int:
    """Copy one file between any two locations, streamed, written atomically; returns its size."""
    with open_read(src) as fin, open_atomic(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=8 << 20)
        return fout.tell()


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode())


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def arrow_fs_paths(uris: list[str]) -> tuple[pafs.FileSystem, list[str]]:
    """A pyarrow filesystem and plain paths for the URIs (all on one filesystem)."""
    if all(is_local(u) for u in uris):
        return pafs.LocalFileSystem(), [absolute(u) for u in uris]
    fs, _ = fs_and_path(uris[0])
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), [fs_and_path(u)[1] for u in uris]
