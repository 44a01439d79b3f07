"""The Python API: what a user scripts, and what the ``dejavu`` command line calls.

    import study

    cfg = study.load_config("configs/tiny.yaml", overrides=["train.epochs=2"], output="runs")
    report = study.run(cfg)
    print(report.headline)

Every function raises ``study.StudyError`` (a ``ConfigError`` for a config mistake) with a one-line
message for a user mistake, as the command line prints it. Nothing heavy is imported until a
function runs: ``import study`` stays cheap.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from study.config import StudyConfig
from study.errors import StudyError


@dataclass(frozen=True)
class Report:
    """A finished study's report (``report.json``), with its most used parts as attributes.

    Attributes:
        uri: where the report.json was read.
        study: the study kind (``ssl_dejavu``, ``vlm_dejavu``, ``sslmem``).
        name: the study's name (the config's ``name``).
        run_dir: the run directory the report belongs to.
        headline: the numbers quoted first (per search space and control, for instance).
        results: every number the measure stage wrote.
        config: the resolved config the run used, as a dict.
        data: the whole report.json.
    """

    uri: str
    study: str
    name: str
    run_dir: str
    headline: dict
    results: dict
    config: dict
    data: dict

    @property
    def html(self) -> str:
        """The report page beside report.json."""
        return self.uri.rsplit("/", 1)[0] + "/report.html"

    def summary(self) -> list[str]:
        """The summary lines ``dejavu report`` prints."""
        from study.report.summary import summary_lines

        return summary_lines(self.data)

    @classmethod
    def from_dict(cls, data: dict, uri: str) -> "Report":
        return cls(uri, data.get("study", ""), data.get("name", ""), data.get("run_dir", ""),
                   data.get("headline") or {}, data.get("results") or {}, data.get("config") or {}, data)


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                output: str | None = None) -> StudyConfig:
    """Read a study config.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``"key=value"`` strings, as ``--set`` takes them (``"train.epochs=10"``).
        output: the output root (a local directory or an fsspec URI such as ``s3://bucket/runs``).

    Returns:
        The checked, typed config (a frozen dataclass; ``dataclasses.replace`` makes variants).

    Examples:
        >>> cfg = load_config(None, ["search.k=20"])
        >>> cfg.search.k
        20
    """
    from study.config_load import load_config as load

    return load(None if path is None else os.fspath(path), list(overrides), output)


def run(config: StudyConfig | str | os.PathLike, overrides: Iterable[str] = (), output: str | None = None,
        until: str | None = None) -> Report | None:
    """Run a study, or resume it: finished stages with the same inputs are reused.

    Args:
        config: a config object, or the path of a YAML config.
        overrides: ``"key=value"`` strings applied to the config (with a path only).
        output: the output root, instead of the config's ``output``.
        until: stop after this stage (``data``, ``annotate``, ``splits``, ``train``, ``embed``,
            ``search``, ``measure``); None runs every stage through ``report``.

    Returns:
        The report, or None when ``until`` stopped before the report stage.

    Examples:
        >>> report = run("configs/tiny.yaml", output="runs")  # doctest: +SKIP
        >>> report.headline["projector"]["positive"]["gap"]  # doctest: +SKIP
    """
    from study import console
    from study.frame.runner import run_study

    if not console.configured():  # a program without logging of its own still sees the progress lines
        console.configure()
    if isinstance(config, StudyConfig):
        if list(overrides):
            raise StudyError("overrides apply to a config read from a file; change a config object with "
                             "dataclasses.replace, or pass its path")
        cfg = config if output is None else dataclasses.replace(config, output=output)
    else:
        cfg = load_config(config, overrides, output)
    ctx = run_study(cfg, until=until)
    if until is not None and until != "report":
        return None
    return open_report(ctx.report_json)


def annotate(config: str | os.PathLike | None, uri: str, source: str, overrides: Iterable[str] = (),
             output: str | None = None) -> dict:
    """Annotate an input on its own: the data and annotate stages of ``config`` over ``uri``
    (read as ``source``), whose side table other studies can read as ``data.objects``.

    Returns:
        The annotate stage's summary (``side_table`` is where the side table is), with ``run_dir``.
    """
    import json

    from study import console
    from study.frame.context import RunContext, read_marker
    from study.frame.runner import run_study

    if not console.configured():
        console.configure()
    # JSON-quoted: the URI and source are taken as they are, never read as YAML
    cfg = load_config(config, [*overrides, f"data.source={json.dumps(source)}", f"data.path={json.dumps(uri)}"], output)
    if not cfg.annotate.on:
        raise StudyError("data annotate: the config names no annotator; set annotate.annotator and annotate.weights")
    ctx = run_study(cfg, until="annotate")
    return {**read_marker(RunContext.create(cfg).stage_dir("annotate"))["summary"], "run_dir": ctx.run_dir}


def open_report(uri: str) -> Report:
    """Read a finished report.

    Args:
        uri: report.json, its directory or a run directory; local or any fsspec URI.

    Returns:
        The report.
    """
    from study import storage
    from study.preflight import check_inputs
    from study.report.summary import locate

    check_inputs({"report": uri}, local=False)
    path = locate(uri)
    try:
        return Report.from_dict(storage.read_json(path), path)
    except ValueError:
        raise StudyError(f"{path} is not a valid report (JSON could not be read)") from None


def pull_report(uri: str, dest: str | None = None, overwrite: bool = False):
    """Copy a finished report (report.json, report.html and the gallery's files) elsewhere.

    Args:
        uri: report.json, its directory or a run directory; local or any fsspec URI.
        dest: where to put it (default ``./<name>/<run id>/report``).
        overwrite: replace what ``dest`` holds.

    Returns:
        ``Pulled``: the source, the destination and each file's size.
    """
    from study.preflight import check_inputs, check_output
    from study.report.pull import pull_report as pull

    check_inputs({"report": uri}, local=False)
    if dest:
        check_output(dest)
    return pull(uri, dest, overwrite)


def list_reports(uri: str) -> list:
    """The runs under an output root, a study's directory or a run directory.

    Returns:
        One ``RunState`` per run: its kind, each stage's progress, when it last changed and its
        report (a dict) when finished.
    """
    from study.preflight import check_inputs
    from study.report.runs import find_runs

    check_inputs({"report list": uri}, local=False)
    return find_runs(uri)


def synth(output: str, format: str = "parquet", num: int = 1000, overrides: Sequence[str] = (),
          objects: str | None = None, overwrite: bool = False, progress=None) -> dict[str, Any]:
    """Write a synthetic dataset in one of the layouts users bring.

    Args:
        output: where to write it (local or fsspec URI; its bucket must exist).
        format: ``parquet`` or ``webdataset`` (img2dataset's output: Parquet shards, or tar
            shards, with an objects side table), ``coco``, ``voc`` (class folders) or ``hf`` (a
            Hugging Face dataset saved with ``save_to_disk``).
        num: how many images.
        overrides: ``data.*`` and ``ray.*`` ``"key=value"`` strings (image size, classes, ...).
        objects: where the objects side table goes (``parquet`` and ``webdataset``; default
            ``OUTPUT/objects.parquet``).
        overwrite: replace what ``output`` holds.
        progress: called as ``progress(shards_done, shards, records)`` every few seconds.

    Returns:
        ``{"written": what the writer wrote, "flags": the --set flags a study reads it with}``.
    """
    from study import storage
    from study.data.synth_formats import FORMATS
    from study.data.synth_write import throttled
    from study.errors import ConfigError
    from study.frame.cluster import ensure_ray
    from study.preflight import check_output

    if format not in FORMATS:
        raise StudyError(f"data synth: unknown format '{format}'; choose from {sorted(FORMATS)}")
    foreign = [o for o in overrides if not o.startswith(("data.", "ray."))]
    if foreign:
        raise ConfigError(f"data synth: --set takes data.* and ray.* keys, got {foreign[0]!r}")
    cfg = load_config(None, [*overrides, f"data.num_images={num}"])
    output = storage.absolute(output)
    check_output(output)  # before anything is generated: no bucket is ever created
    storage.clear_for_writing(output, overwrite)
    ensure_ray(cfg, paths={"--output": output})
    fmt = FORMATS[format]()
    out = fmt.write(cfg.data, output, objects and storage.absolute(objects),
                    throttled(progress or (lambda *a: None), every_s=2.0))
    return {"written": out, "flags": fmt.flags(out), "description": fmt.describe(out)}
