"""What every config section shares: the split names and the check that names a bad key."""
from __future__ import annotations

from study.errors import ConfigError

# Field metadata of a key added to a section after runs existed: config hashes leave it out while
# it holds its default (``config_load.config_hash``), so existing runs keep their ids.
ADDED = {"added": True}
SPLIT_NAMES = ("target", "reference", "public", "holdout", "shared")


def check(ok: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming the dotted ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")
