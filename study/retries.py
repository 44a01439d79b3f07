"""Transient object-store errors: retried with backoff, and counted.

A dropped connection, a store that stops answering for a few seconds, throttling (S3's
``SlowDown``, HTTP 503) or a server error is retried inside the object-store client, with
exponential backoff and jitter: for S3 the product sets botocore's ``standard`` retry mode with
``ATTEMPTS`` attempts per request (backoff doubling from about a second, at most 20 s between
tries), unless the user chose a policy of their own (``AWS_RETRY_MODE`` or ``AWS_MAX_ATTEMPTS``
in the environment, or ``config_kwargs`` in fsspec's configuration). A store that stays
unreachable fails the request after its last attempt (about half a minute), and the command
ends with one ``error:`` line; rerunning it resumes from the last finished stage.

The retries are counted so that a stage's summary can say how many it needed: the clients
say nothing about them except in a debug log line, so a logging filter on those loggers counts
the lines and passes on only the records the logger would have passed anyway (nothing changes in
what a user's logging configuration shows). The count is per process; the stage runner reads the
driver's, and work that runs in Ray tasks hands its own back with its results (``since``).
"""
from __future__ import annotations

import logging
import os
import threading

ATTEMPTS = int(os.environ.get("DEJAVU_STORE_ATTEMPTS", "6"))
# (logger, the start of the debug message it writes before each retry)
RETRY_LINES = (
    ("botocore.endpoint", "Response received to retry"),  # botocore and aiobotocore: any retry
    ("s3fs", "Retryable error"),  # s3fs's own retries around a call (timeouts, broken reads)
)

_lock = threading.Lock()
_count = 0


class _RetryCounter(logging.Filter):
    """Counts a logger's retry lines; lets through only the records of the level its logger had."""

    def __init__(self, logger: logging.Logger, prefix: str, level: int):
        super().__init__()
        self.logger, self.prefix, self.level = logger, prefix, level

    def filter(self, record: logging.LogRecord) -> bool:
        global _count
        if isinstance(record.msg, str) and record.msg.startswith(self.prefix):
            with _lock:
                _count += 1
        if self.level:  # the logger's own level, as the user or the library set it
            return record.levelno >= self.level
        parent = self.logger.parent
        return parent is None or record.levelno >= parent.getEffectiveLevel()


def install() -> None:
    """Set the S3 retry policy (unless the user has one) and start counting. Idempotent."""
    import fsspec.config

    s3 = fsspec.config.conf.setdefault("s3", {})
    if not ({"AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"} & set(os.environ)) and "config_kwargs" not in s3:
        s3["config_kwargs"] = {"retries": {"mode": "standard", "max_attempts": ATTEMPTS}}
    for name, prefix in RETRY_LINES:
        logger = logging.getLogger(name)
        if any(isinstance(f, _RetryCounter) for f in logger.filters):
            continue
        logger.addFilter(_RetryCounter(logger, prefix, logger.level))
        logger.setLevel(logging.DEBUG)  # the clients write the retry lines at debug level


def count() -> int:
    """Retries of object-store requests so far in this process."""
    return _count


def since(start: int) -> int:
    return _count - start


def add(n: int) -> None:
    """Retries counted in another process (a Ray task's), added to this one's count."""
    global _count
    with _lock:
        _count += int(n)
