"""dejavu-study: measure déjà vu memorization of image encoders on Ray.

The Python API (``study.api``), importable from here::

    import study

    report = study.run("configs/tiny.yaml", output="runs")
    print(report.headline)

``load_config``, ``run``, ``open_report``, ``pull_report``, ``list_reports``, ``synth``, the
``Report`` they return and ``StudyError`` / ``ConfigError``, the errors they raise for a user
mistake. The API's modules load on first use, so ``import study`` is cheap.
"""
from study.errors import ConfigError, StudyError

__version__ = "0.1.0"
API = ("Report", "load_config", "run", "open_report", "pull_report", "list_reports", "synth")
__all__ = [*API, "ConfigError", "StudyError", "__version__"]


def __getattr__(name: str):
    if name in API:
        from study import api

        return getattr(api, name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")
