"""Model files trained elsewhere (a weights file or a model folder) at a local path or any fsspec
URI: a local copy, made once per machine, and a fingerprint of the contents.

A remote file or folder is copied into the machine's cache (``$DEJAVU_CACHE``, else
``~/.cache/dejavu-study``) under a key of its URI and its listing (each file's size and
modification time): the import, every later stage and the next study on the same node read the
copy, and a file replaced at the same URI is a new key. A local path is used where it is. The
fingerprint (sha256 over file names and contents) is kept beside the copy, or for a local path
under the same kind of key, so that hashing a stage does not read a large file again.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile

from study import storage
from study.errors import ConfigError, DataError


def cache_root() -> str:
    return os.environ.get("DEJAVU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dejavu-study")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _listing(uri: str, key: str) -> list[tuple[str, int, str]]:
    """(path below ``uri``, size, version) of each file: a file alone, or every file of a folder.
    The version is what the store lists that changes with the contents: an object store's ETag
    (its modification time has whole seconds), a local file's modification time."""
    fs, base = storage.fs_and_path(uri)
    try:
        found = fs.find(base, detail=True) if fs.exists(base) else {}
    except Exception as e:  # wrong credentials, a refused connection
        raise DataError(f"{key}: cannot read {uri} ({_one_line(e)})") from None
    if not found:
        raise ConfigError(f"{key}: nothing at {uri}")
    base = base.rstrip("/")
    out = []
    for path, info in sorted(found.items()):
        rel = posixpath.relpath(path, base) if path != base else ""
        if posixpath.basename(path).startswith("."):
            continue
        version = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or \
            info.get("LastModified") or info.get("updated")
        out.append(("" if rel == "." else rel, int(info.get("size") or 0), str(version)))
    return out


def _key(uri: str, listing) -> str:
    return hashlib.sha256(json.dumps([uri, listing]).encode()).hexdigest()[:32]


def local_path(uri: str, key: str) -> str:
    """A local path holding what ``uri`` holds (a file or a folder, as ``uri`` is): ``uri`` itself
    when it is local, else the cache's copy, made here if the cache has none. ``key`` names the
    config key in errors."""
    listing = _listing(uri, key)
    if storage.is_local(uri):
        return storage.absolute(uri)
    name = os.path.basename(storage.fs_and_path(uri)[1].rstrip("/")) or "model"
    where = os.path.join(cache_root(), "models", _key(uri, listing))
    target = os.path.join(where, name)
    if os.path.exists(os.path.join(where, "_COMPLETE")):
        return target
    os.makedirs(os.path.dirname(where), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".copy-", dir=os.path.dirname(where))
    try:
        for rel, _, _ in listing:
            src = uri if not rel else storage.join(uri, rel)
            storage.copy_file(src, os.path.join(staging, name, rel) if rel else os.path.join(staging, name))
        open(os.path.join(staging, "_COMPLETE"), "w").close()
        try:
            os.replace(staging, where)  # another process's copy may have landed first: keep it
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{key}: cannot copy {uri} ({_one_line(e)})") from None
    return target


def fingerprint(uri: str, key: str) -> str:
    """sha256 over the file names and contents of ``uri`` (a file: its bytes alone), computed once
    per listing and kept in the cache."""
    listing = _listing(uri, key)
    memo = os.path.join(cache_root(), "fingerprints", _key(storage.absolute(uri) if storage.is_local(uri) else uri,
                                                            listing))
    if os.path.exists(memo):
        with open(memo) as fh:
            return fh.read().strip()
    path = local_path(uri, key)
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else [os.path.join(path, rel) for rel, _, _ in sorted(listing)]
    for f in files:
        if f != path:
            digest.update(os.path.relpath(f, path).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    os.makedirs(os.path.dirname(memo), exist_ok=True)
    with storage.open_atomic(memo, "w") as fh:
        fh.write(value)
    return value
