"""User mistakes end with one clear ``error:`` line and exit status 2, never a traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ray's own notices (token auth at start-up, Ray Data's once-per-process warnings) when the error
# comes from a stage that runs on Ray: not the product's output.
# Ray's own log lines: timestamped INFO/WARNING lines, and lines forwarded from its processes
# ("(pid=gcs_server) ...", "(TrainController pid=...) ...") as the cluster shuts down after the error,
# and the C++ core's own lines ("[2026-... E 8131 8131] core_worker.cc:2465: ...").
RAY_LOG_LINE = re.compile(r"^(\x1b\[\d+m)?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(INFO|WARNING) |\((\w+ )?(pid|raylet|gcs_server)[=\w, ]*\)(\x1b\[\d+m)? "
                          r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [IWE] \d+ \d+\] \w+\.cc:\d+: )")


def dejavu(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )


def dejavu_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """The command line in this process: the same ``main`` and output as the subprocess, without
    paying for Python's, torch's and Ray's start-up (mistakes found on Ray use the module's
    instance, ``ray_local``)."""
    from study.cli import main

    def ray_up() -> bool:
        return "ray" in sys.modules and sys.modules["ray"].is_initialized()

    before = ray_up()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert ray_up() == before  # no Ray instance of its own left behind (tests on Ray use ray_local)
    return subprocess.CompletedProcess(["dejavu", *args], code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not RAY_LOG_LINE.match(ln)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--set", "train.epoch=3"], ["unknown config key 'train.epoch'", "did you mean 'train.epochs'"]),
        (["--set", "train.epochs=many"], ["train.epochs", "integer"]),
        (["--set", "search.k=0"], ["search.k"]),
        (["--set", "ray.num_cpus=1"], ["ray.num_cpus", "at least 2"]),
        (["--set", "train.method=mocov3"], ["train.method", "simclr"]),
        (["--set", "model.projector_dims=64-32-16-8", "--set", "sweep={train.method: [simclr, dino]}"],
         ["model.projector_dims", "dino takes at most 3 sizes"]),
        (["--set", "model.backbone=vit"], ["model.backbone", "small_cnn"]),
        (["--set", "splits.fractions={target: 0.9, reference: 0.2, public: 0.1}"], ["splits.fractions", "sum"]),
        (["--set", "data.source=parquet", "--set", "data.path=/nonexistent/records"], ["input path does not exist", "/nonexistent/records"]),
        (["--set", "data.path=[oops"], ["data.path", "'[oops'", "not valid YAML"]),
        (["--until", "bogus"], ["unknown stage 'bogus'", "measure"]),
    ],
)
def test_bad_config_gives_one_error_line(tmp_path, capsys, args, fragments):
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", str(tmp_path), *args)
    assert_one_line_error(proc, *fragments)


def test_missing_config_file(tmp_path):
    assert_one_line_error(dejavu("run", str(tmp_path / "nope.yaml"), tmp_path=tmp_path), "config file not found")


def test_object_storage_without_credentials(tmp_path, capsys, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    # Nothing listens there, no config file or instance metadata: no credentials at all.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    proc = dejavu_here(capsys, "report", "list", "s3://some-bucket/studies")
    s3fs.S3FileSystem.clear_instance_cache()
    assert_one_line_error(proc, "no credentials for object storage", "AWS_ACCESS_KEY_ID")


def test_report_of_missing_run(tmp_path):
    assert_one_line_error(dejavu("report", str(tmp_path / "no-run"), tmp_path=tmp_path), "no report.json found")


def test_parquet_without_required_columns(tmp_path, capsys, ray_local):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"id": ["a"], "caption": ["x"]}), tmp_path / "bad" / "part-0.parquet")
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", str(tmp_path / "out"),
        "--set", "data.source=parquet", "--set", f"data.path={tmp_path / 'bad'}")
    assert_one_line_error(proc, "lack required column")



def test_output_location_that_cannot_be_a_directory(tmp_path, capsys, ray_local):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", str(blocker / "runs"))
    assert_one_line_error(proc, "cannot write to the output location", str(blocker))


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--set", "model.clip=ViT-B-33"], ["model.clip", "unknown open_clip model 'ViT-B-33'", "ViT-B-32"]),
        (["--set", "train.method=simclr"], ["train.method", "vlm_dejavu", "clip"]),
        (["--set", "measure.ks=[1, 10, 500]"], ["measure.ks", "search.k"]),
        (["--set", "measure.headline_rule=majority"], ["measure.headline_rule", "top_n"]),
        (["--set", "train.text_randomization.p=1.5"], ["train.text_randomization.p"]),
        (["--set", "train.text_randomization.mode=drop"], ["train.text_randomization.mode", "mask"]),
        (["--set", "measure.zero_shot_prompt=a photo"], ["measure.zero_shot_prompt", "{}"]),
        (["--set", "sweep={train.text_randomization.p: [0.1, 0.1]}"], ["sweep", "listed twice"]),
        (["--set", "sweep={data.num_images: [100, 200]}"], ["sweep", "cannot be swept"]),
    ],
)
def test_bad_vlm_config_gives_one_error_line(tmp_path, capsys, args, fragments):
    proc = dejavu_here(capsys, "run", "configs/quickstart-vlm.yaml", "--output", str(tmp_path), *args)
    assert_one_line_error(proc, *fragments)


def test_wholly_unreadable_input_is_one_error_line(tmp_path):
    """Records whose images all fail to decode: nothing is usable, so the run stops naming the path
    and the count per reason (a few bad images are quarantined instead; tests/test_faults.py)."""
    from study.config import DataConfig
    from study.data import records, synthetic

    (tmp_path / "in").mkdir()
    for shard, rows in synthetic.iter_shards(DataConfig(num_images=60, shard_size=60)):
        rows["image"] = [b"not an image"] * len(rows["image"])
        records.write_shard(str(tmp_path / "in" / f"part-{shard:05d}.parquet"), rows)
    # A process of its own: Ray Data logs through a handler that an in-process run would leave
    # holding pytest's captured stderr.
    proc = dejavu("run", "configs/tiny.yaml", "--output", str(tmp_path / "out"), "--set", "data.source=parquet",
                  "--set", f"data.path={tmp_path / 'in'}", tmp_path=tmp_path)
    assert_one_line_error(proc, "no usable record", str(tmp_path / "in"), "60 read", "'undecodable': 60")


def test_vlm_input_without_captions_column(tmp_path, capsys, ray_local):
    import pyarrow.parquet as pq

    from study.config import DataConfig
    from study.data import records, synthetic

    (tmp_path / "in").mkdir()
    for shard, rows in synthetic.iter_shards(DataConfig(num_images=300, objects_per_image=(2, 3), shard_size=300)):
        table = records.pa.table(rows, schema=records.RECORD_SCHEMA).drop_columns(["caption"])
        pq.write_table(table, tmp_path / "in" / f"part-{shard:05d}.parquet")
    proc = dejavu_here(capsys, "run", "configs/quickstart-vlm.yaml", "--output", str(tmp_path / "out"), "--set", "data.source=parquet",
                  "--set", f"data.path={tmp_path / 'in'}")
    assert_one_line_error(proc, "caption")


def test_ssl_input_without_boxes_column(tmp_path, capsys, ray_local):
    import pyarrow.parquet as pq

    from study.config import DataConfig
    from study.data import records, synthetic

    (tmp_path / "in").mkdir()
    for shard, rows in synthetic.iter_shards(DataConfig(num_images=60, shard_size=60)):
        table = records.pa.table(rows, schema=records.RECORD_SCHEMA).drop_columns(["boxes"])
        pq.write_table(table, tmp_path / "in" / f"part-{shard:05d}.parquet")
    proc = dejavu_here(capsys, "run", "configs/tiny.yaml", "--output", str(tmp_path / "out"), "--set", "data.source=parquet",
                  "--set", f"data.path={tmp_path / 'in'}")
    assert_one_line_error(proc, "lack column(s) ['boxes']", "ssl_dejavu")
    assert not (tmp_path / "out").exists()  # stopped before any stage


def test_a_study_error_raised_in_a_ray_task_is_its_own_line():
    """Ray re-raises a task's error as an instance of the task's error class whose text is the
    task's traceback; the command prints the task's StudyError alone."""
    from ray.exceptions import RayTaskError

    from study.cli import _study_error
    from study.errors import StudyError

    inner = StudyError("search results under s3://b/x name 1 neighbour(s) that are not public records")
    wrapped = RayTaskError("score_part", "Traceback (most recent call last):\n  File ...", inner).as_instanceof_cause()
    assert isinstance(wrapped, StudyError) and str(wrapped) != str(inner)  # the text: where the task ran, its traceback
    assert _study_error(wrapped) is inner
    assert _study_error(ValueError("not ours")) is None
