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
