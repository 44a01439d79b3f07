"""User-facing errors: anything the user can fix is raised as a StudyError.

The command line prints a StudyError as one line and exits non-zero; every other exception is
a bug in the product and keeps its traceback.
"""


class StudyError(Exception):
    """A problem the user can fix (bad config, missing input, inconsistent data)."""


class ConfigError(StudyError):
    """A config key, value or type is wrong."""


class DataError(StudyError):
    """Input data is missing or does not match the record schema."""


def causes(exc: BaseException | None, context: bool = False):
    """``exc`` and the exceptions behind it: Ray re-raises a task's failure with the original as
    ``cause``, Python chains ``__cause__`` (and, with ``context``, ``__context__``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or (exc.__context__ if context else None)
