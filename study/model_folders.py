"""Model folders (a Hugging Face ``save_pretrained`` or sentence-transformers ``save`` output) given
as a local path or any fsspec URI: a local folder to load them from, and a fingerprint of their
files. Nothing is downloaded from a hub: a folder is what the user has."""
from __future__ import annotations

import hashlib
import os
import tempfile

from study import storage
from study.errors import ConfigError


def local_folder(uri: str, key: str, what: str = "a Hugging Face model (save_pretrained's output)"
                 ) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """A local folder holding the model's files: ``uri`` itself, or a copy of it (kept while the
    returned TemporaryDirectory is). ``key`` names the config key in the error."""
    if storage.is_local(uri):
        path = storage.absolute(uri)
        if not os.path.isdir(path):
            raise ConfigError(f"{key}: {uri} is not a folder of {what}")
        return path, None
    files = storage.list_files(uri)
    if not files:
        raise ConfigError(f"{key}: nothing under {uri}")
    tmp, base = tempfile.TemporaryDirectory(prefix="dejavu-hf-"), storage.fs_and_path(uri)[1].rstrip("/")
    for f in files:
        storage.copy_file(f, os.path.join(tmp.name, os.path.relpath(storage.fs_and_path(f)[1], base)))
    return tmp.name, tmp


def fingerprint(folder: str) -> str:
    """sha256 over the folder's file names and contents, in a fixed order."""
    digest = hashlib.sha256()
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            digest.update(name.encode())
            with open(os.path.join(root, name), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
