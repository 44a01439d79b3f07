"""LAION-style inputs: `dejavu data synth` writes img2dataset's layouts and the data stage ingests
them back into the record schema, joined with a side table of objects, locally and on S3.

The oracle is the synthetic generator itself: ids, captions, objects, labels and boxes must come
back exactly, and images (JPEG, so lossy) must decode to the same size and nearly the same pixels.
"""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from conftest import start_ray, stop_ray
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the moto server fixture)

from study import storage
from study.cli import main
from study.config import DATA_SOURCES
from study.config_load import load_config
from study.data import laion, records, synth_write, synthetic
from study.errors import DataError
from study.stages import data as ingest
from study.frame.context import RunContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, SHARD, SEED = 60, 25, 3
# Images of several sizes and aspect ratios (8-32 px on a side), as users' photographs come.
GEN = ["data.image_size=16", "data.num_classes=5", "data.objects_per_image=[1, 3]", "data.size_range=[0.5, 2.0]"]
GEN_CFG = load_config(None, GEN + [f"data.num_images={N}", f"data.shard_size={SHARD}", f"data.seed={SEED}"]).data
MAX_MEAN_ABS_DIFF = 5.0  # per channel level; JPEG at quality 95, 4:4:4, on 16 px scenes gives about 3


@pytest.fixture(scope="module")
def cluster(s3_env, ray_local):  # noqa: F811
    """Ray restarted after the S3 server's environment is set, so its workers reach the server, and
    stopped after the module, so no later module's workers keep this server's address."""
    stop_ray()
    yield start_ray()
    stop_ray()


def synth(fmt: str, output: str, *extra: str) -> int:
    args = ["data", "synth", "--format", fmt, "--num", str(N), "--output", output, "--shard-size", str(SHARD),
            "--seed", str(SEED), *extra]
    for o in GEN:
        args += ["--set", o]
    return main(args)


@pytest.fixture(scope="module")
def written(cluster, tmp_path_factory):
    """Both layouts, written once by the CLI: {format: (shards folder, side table)}."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for fmt in ("webdataset", "parquet"):
        assert synth(fmt, str(root / fmt)) == 0
        out[fmt] = (str(root / fmt), str(root / fmt / "objects.parquet"))
    return out


def truth() -> dict[str, dict]:
    return {r["id"]: r for r in (synthetic.make_record(i, GEN_CFG) for i in range(N))}


def context(tmp_path, source: str, path: str, objects: str | None, output: str | None = None) -> RunContext:
    sets = GEN + [f"data.source={source}", f"data.path={path}", "data.shard_size=20"]
    sets += [f"data.objects={objects}"] if objects else []
    return RunContext.create(load_config(None, sets, output or str(tmp_path / "runs")))


def read_back(ctx: RunContext) -> dict[str, dict]:
    return {r["id"]: r for r in records.dataset(ctx.data_root).to_table().to_pylist()}


# -- no Ray -----------------------------------------------------------------------------------
def jpeg(value: int, size=(12, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, format="JPEG")
    return buf.getvalue()


def test_image_check_agrees_with_a_full_decode():
    """The check decodes JPEG at 1/8 scale; it must accept and refuse what a full decode does."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 24, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    jpg, png = buf.getvalue(), records.encode_png(pixels)
    cases = [jpg, png, jpg[: len(jpg) // 2], png[: len(png) // 2], jpg[:200], jpg[:600] + bytes(300) + jpg[900:],
             b"not an image", b""]
    for data in cases:
        try:
            full = records.decode_image(data).shape[1::-1]
        except Exception:
            full = None
        assert laion.inspect_image(data) == full
    assert laion.inspect_image(jpg) == (24, 40)


def test_parquet_batch_marks_failed_downloads_and_bad_images():
    status = ["success", "failed_to_download", "success", "success"]
    batch = pa.table({"key": ["a", "b", "c", "d"], "jpg": [jpeg(10), None, b"not an image", jpeg(20)],
                      "caption": ["x", None, "z", "w"], "status": status, "width": [99, None, 16, 16]})
    out = laion.parquet_batch(batch, "jpg")
    assert out.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert out.column(laion.STATUS).to_pylist() == [laion.OK, laion.NOT_DOWNLOADED, laion.UNDECODABLE, laion.OK]
    # Size comes from the image header, not the metadata (row a claims 99).
    assert out.column("width").to_pylist() == [12, None, None, 12]
    assert out.column("height").to_pylist() == [9, None, None, 9]
    assert out.column("image").to_pylist()[1] is None


def test_webdataset_batch_caption_from_txt_else_json():
    batch = pa.table({"__key__": ["dir/k1", "k2"], "jpg": [jpeg(1), jpeg(2)], "txt": [b"from txt", None],
                      "json": [b'{"caption": "ignored"}', b'{"caption": "from json"}']})
    out = laion.webdataset_batch(batch)
    assert out.column("id").to_pylist() == ["k1", "k2"]
    assert out.column("caption").to_pylist() == ["from txt", "from json"]


def test_side_rows_and_record_schema():
    side = laion.side_batch(pa.table({"key": [7, 8], "objects": [["one"], None]}), "key")
    assert side.column("id").to_pylist() == ["7", "8"]
    assert side.schema.field("boxes").type == pa.list_(records.BOX_TYPE)
    assert side.column("label").null_count == 2 and side.column(laion.MATCHED).to_pylist() == [True, True]
    table = laion.to_record_schema(pa.table({"id": ["a"], "width": pa.array([3], pa.int64())}))
    assert table.schema == records.RECORD_SCHEMA and table.column("caption").null_count == 1


def test_registry_covers_every_configured_source():
    assert set(ingest.SOURCES) == set(DATA_SOURCES)
    assert set(synth_write.FORMAT_SOURCES.values()) <= set(DATA_SOURCES)


def test_input_files_leave_out_the_side_table(tmp_path):
    for name in ("00000.parquet", "00001.parquet", "_stats.parquet", "objects.parquet"):
        (tmp_path / name).write_bytes(b"x" * 3)
    files = laion.input_files(str(tmp_path), ".parquet", exclude=str(tmp_path / "objects.parquet"))
    assert [os.path.basename(u) for u, _ in files] == ["00000.parquet", "00001.parquet"]
    assert laion.fingerprint(files, str(tmp_path)) == [("00000.parquet", 3), ("00001.parquet", 3)]
    with pytest.raises(DataError, match="no .tar files found"):
        laion.input_files(str(tmp_path), ".tar")


# -- the CLI's one-line errors ----------------------------------------------------------------
def one_error_line(capsys, argv: list[str], *fragments: str) -> None:
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_errors(capsys, tmp_path):
    one_error_line(capsys, ["data", "synth", "--format", "zip", "--num", "60", "--output", str(tmp_path / "x")],
                   "unknown format 'zip'", "parquet", "webdataset")
    one_error_line(capsys, ["data", "synth", "--format", "parquet", "--num", "60", "--output", str(tmp_path / "x"),
                            "--set", "train.epochs=3"], "data.* and ray.*")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    one_error_line(capsys, ["data", "synth", "--format", "parquet", "--num", "60", "--output", str(tmp_path / "full")],
                   "already holds files", "--overwrite")
    run = ["run", os.path.join(ROOT, "configs/tiny.yaml"), "--output", str(tmp_path / "runs")]
    one_error_line(capsys, run + ["--set", "data.source=webdataset", "--set", "data.path=/nonexistent/wds"],
                   "input path does not exist", "/nonexistent/wds")
    one_error_line(capsys, run + ["--set", "data.source=img2dataset"], "data.path", "required")
    one_error_line(capsys, run + ["--set", "data.source=parquet", "--set", "data.path=/x", "--set", "data.objects=/y"],
                   "data.objects")


# -- with Ray ---------------------------------------------------------------------------------
def test_synth_writes_img2dataset_layouts(written):
    wds, side_uri = written["webdataset"]
    tars = sorted(f for f in os.listdir(wds) if f.endswith(".tar"))
    assert tars == ["00000.tar", "00001.tar", "00002.tar"]
    with tarfile.open(os.path.join(wds, "00002.tar")) as tar:
        names = tar.getnames()
        first = json.load(tar.extractfile(names[2]))
    key = synthetic.make_record(50, GEN_CFG)["id"]
    assert names[:3] == [f"{key}.jpg", f"{key}.txt", f"{key}.json"] and len(names) == 3 * 10
    assert first == {"key": key, "caption": truth()[key]["caption"], "width": truth()[key]["width"],
                     "height": truth()[key]["height"], "status": "success"}
    pqdir, _ = written["parquet"]
    table = pq.read_table(os.path.join(pqdir, "00001.parquet"))
    assert table.column_names == ["key", "jpg", "caption", "width", "height", "status"] and table.num_rows == SHARD
    side = pq.read_table(side_uri)
    assert side.column_names == ["key", "objects", "label", "boxes"]
    assert sorted(side.column("key").to_pylist()) == sorted(truth())


def test_synthetic_source_writes_the_same_shards_in_parallel(cluster, tmp_path):
    """The synthetic data stage's Ray tasks write what the sequential generator yields, shard by shard."""
    ctx = RunContext.create(load_config(None, GEN + ["data.num_images=45", "data.shard_size=20"], str(tmp_path)))
    assert ingest.run_data(ctx)["shards"] == 3
    for shard, cols in synthetic.iter_shards(ctx.cfg.data):
        table = pq.read_table(storage.join(ctx.data_root, f"part-{shard:05d}.parquet"))
        assert table.equals(pa.table(cols, schema=records.RECORD_SCHEMA)), shard
    assert len(records.shard_uris(ctx.data_root)) == 3


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_ingest_gives_the_generators_records(written, tmp_path, fmt):
    path, side = written[fmt]
    ctx = context(tmp_path, synth_write.FORMAT_SOURCES[fmt], path, side)
    summary = ingest.run_data(ctx)
    assert (summary["records_read"], summary["records_written"], summary["with_objects"], summary["without_objects"],
            summary["quarantined"]) == (N, N, N, 0, {})
    got, want = read_back(ctx), truth()
    assert sorted(got) == sorted(want)
    for rid, r in want.items():
        g = got[rid]
        for col in ("caption", "objects", "label", "boxes", "width", "height"):
            assert g[col] == r[col], (rid, col)
        a, b = records.decode_image(g["image"]).astype(float), records.decode_image(r["image"]).astype(float)
        assert a.shape == b.shape == (r["height"], r["width"], 3)
        assert np.abs(a - b).mean() < MAX_MEAN_ABS_DIFF, rid
    shards = records.shard_uris(ctx.data_root)
    assert all(pq.read_schema(u) == records.RECORD_SCHEMA for u in shards)
    assert all(pq.ParquetFile(u).metadata.num_rows <= 20 for u in shards) and summary["shards"] == len(shards) >= 3


def test_join_attaches_objects_to_exactly_the_listed_records(written, tmp_path):
    """A partial side table (every third record, plus a key with no record), over img2dataset Parquet
    with one failed download: listed records get objects, the others stay null, all counted."""
    path, side_uri = written["parquet"]
    side = pq.read_table(side_uri)
    listed = sorted(side.column("key").to_pylist())[::3]
    part = side.filter(pc.is_in(side.column("key"), pa.array(listed)))
    extra = pa.table({"key": ["no-such-record"], "objects": [["zero"]], "label": [0], "boxes": [[]]},
                     schema=part.schema)
    pq.write_table(pa.concat_tables([part, extra]).select(["key", "objects", "label"]), tmp_path / "partial.parquet")
    failed = pa.table({"key": ["failed-0"], "jpg": pa.array([None], pa.binary()), "caption": ["lost"], "width": [None],
                       "height": [None], "status": ["failed_to_download"]}, schema=synth_write.IMG2DATASET_SCHEMA)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in sorted(os.listdir(path)):
        if f[0].isdigit():
            os.link(os.path.join(path, f), inputs / f)
    pq.write_table(failed, inputs / "00009.parquet")
    ctx = context(tmp_path, "img2dataset", str(inputs), str(tmp_path / "partial.parquet"))
    summary = ingest.run_data(ctx)
    assert (summary["records_read"], summary["records_written"], summary["quarantined"]) == (N + 1, N, {"not_downloaded": 1})
    assert (summary["with_objects"], summary["without_objects"]) == (len(listed), N - len(listed))
    got, want = read_back(ctx), truth()
    assert sorted(got) == sorted(want)
    for rid, g in got.items():
        if rid in listed:
            assert (g["objects"], g["label"]) == (want[rid]["objects"], want[rid]["label"])
        else:
            assert g["objects"] is None and g["label"] is None
        assert g["boxes"] is None  # the side table had no boxes column


def test_undecodable_image_is_quarantined(written, tmp_path):
    path, _ = written["webdataset"]
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / "00000.tar", "w") as tar, tarfile.open(os.path.join(path, "00000.tar")) as src:
        for i, member in enumerate(src.getmembers()):
            data = src.extractfile(member).read()
            if i == 3:  # the second sample's image
                data = data[: len(data) // 3]
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    ctx = context(tmp_path, "webdataset", str(bad), None)
    summary = ingest.run_data(ctx)
    assert (summary["records_read"], summary["records"], summary["quarantined"]) == (25, 24, {"undecodable": 1})
    held = pq.read_table(ctx.quarantine_dir).to_pylist()
    assert held == [{"id": "syn-3-00000001", "reason": "undecodable"}]
    assert "syn-3-00000001" not in records.dataset(ctx.data_root).to_table(columns=["id"]).column("id").to_pylist()


def test_ingest_on_object_storage(written, tmp_path):
    """Shards written to S3 by the CLI, ingested from S3 into a run on S3, joined with the side table."""
    src = f"s3://{BUCKET}/laion/wds"
    assert synth("webdataset", src) == 0
    ctx = context(tmp_path, "webdataset", src, f"{src}/objects.parquet", output=f"s3://{BUCKET}/runs")
    assert ctx.data_root.startswith("s3://")
    summary = ingest.run_data(ctx)
    assert (summary["records_written"], summary["with_objects"]) == (N, N)
    got = records.read_records(ctx.data_root, ["syn-3-00000007"], columns=["id", "objects", "caption"]).to_pylist()
    want = truth()["syn-3-00000007"]
    assert got == [{"id": want["id"], "objects": want["objects"], "caption": want["caption"]}]
    fingerprint = ingest.input_fingerprint(ctx.cfg.data)
    assert [n for n, _ in fingerprint["shards"]] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [n for n, _ in fingerprint["objects"]] == ["objects.parquet"]
    # `dejavu data inspect` streams the same S3 input and writes its page to S3.
    page = f"s3://{BUCKET}/pages/wds.html"
    assert main(["data", "inspect", src, "--source", "webdataset", "--study", "vlm_dejavu", "--html", page,
                 "--sample", "4", "--set", f"data.objects={src}/objects.parquet"]) == 0
    assert storage.read_bytes(page).decode().count("<img") == 4


def test_vlm_study_on_webdataset_runs_through_splits(written, tmp_path, capsys):
    """The stage runner with data.source=webdataset: up-front checks, data, splits; a rerun reuses
    both, and a rewritten side table changes the data stage's inputs (so it would rerun)."""
    from study.frame.runner import _inputs, _run_stage, stages
    from study.frame.validate import check_registries

    path, written_side = written["webdataset"]
    side = str(tmp_path / "objects.parquet")  # a copy: this test rewrites it
    pq.write_table(pq.read_table(written_side), side)
    config = os.path.join(ROOT, "configs/quickstart-vlm.yaml")
    sets = GEN + ["data.source=webdataset", f"data.path={path}",
                  "splits.fractions={target: 0.2, reference: 0.2, holdout: 0.2, public: 0.4}"]
    cfg = load_config(config, sets + [f"data.objects={side}"], str(tmp_path / "runs"))
    check_registries(cfg)
    ctx = RunContext.create(cfg)

    def run() -> str:
        digests, timings = {}, {}
        for stage in [s for s in stages() if s.enabled(cfg)][:2]:  # data and splits (no annotator)
            _run_stage(ctx, stage, digests, timings)
        return capsys.readouterr().out

    assert "wrote 60 of 60 records" in run()
    manifest = storage.read_json(ctx.manifest)
    assert sum(manifest["counts"].values()) + manifest["unassigned"] == N
    assert run().count("reusing finished stage") == 2
    before = _inputs(cfg)
    pq.write_table(pq.read_table(side).slice(1), side)
    assert _inputs(cfg) != before
    # The VLM kind reads objects: without a side table the check stops it before any stage.
    with pytest.raises(DataError, match=r"lack column\(s\) \['objects'\].*data.objects"):
        check_registries(load_config(config, sets, str(tmp_path / "runs")))
