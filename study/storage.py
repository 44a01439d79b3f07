"""Storage through fsspec: one set of helpers for local paths and object stores (s3://, gs://).

Writes are atomic per file: locally a temporary file is renamed into place; on object stores a
single PUT is already all-or-nothing. Object-store endpoints and credentials come from the usual
environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), so tests can point at a local S3 server.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from typing import Any, Iterator

import fsspec
import pyarrow.fs as pafs


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


def makedirs(uri: str) -> None:
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)


def remove(uri: str) -> None:
    fs, path = fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@contextlib.contextmanager
def open_atomic(uri: str, mode: str = "wb") -> Iterator[Any]:
    """Open for writing so that readers see the whole file or nothing."""
    fs, path = fs_and_path(uri)
    parent = posixpath.dirname(path) if not is_local(uri) else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if not is_local(uri):
        with fs.open(path, mode) as fh:
            yield fh
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, mode) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def open_read(uri: str):
    fs, path = fs_and_path(uri)
    return fs.open(path, "rb")


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as fh:
        return fh.read()


def write_bytes(uri: str, data: bytes) -> None:
    with open_atomic(uri, "wb") as fh:
        fh.write(data)


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
