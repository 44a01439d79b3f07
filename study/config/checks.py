"""What every config section shares: the split names and the check that names a bad key."""
from __future__ import annotations

from study.errors import ConfigError

SPLIT_NAMES = ("target", "reference", "public", "holdout", "shared")


def check(ok: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming the dotted ``key`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")
