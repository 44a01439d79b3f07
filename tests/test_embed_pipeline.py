"""The embed pipeline writes its own shards (study.embed.shards, study.embed.pipeline).

Without Ray: the shard writer's files, rolling, naming and rerun safety; replica sizing from a
resources dict. With a 2-CPU Ray: the pipeline's files equal the embedder run over the records in
a plain loop, and a write task killed mid-write and retried leaves no duplicate rows.
"""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import storage
from study.config import CropConfig, DataConfig, EmbedConfig, ModelConfig
from study.data import records
from study.data.model_input import ModelInput
from study.data.synthetic import make_record
from study.embed.pipeline import Embedder, EmbeddingSink, embed_all, pool_size
from study.embed.shards import ShardWriter, file_name
from study.core.split_plan import SplitPlan
from study.embed.views import prepare_batch
from study.errors import ConfigError
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server, a module fixture)

VIEWS = {"public": ("a", "b"), "target": ("b",)}


def embedded(ids, sets, dims=(("m/a", 3), ("m/b", 2), ("n/b", 2))) -> dict[str, np.ndarray]:
    """A block as the replicas emit it; each vector is a function of its id (checked on read)."""
    x = np.array([int(i.split("-")[1]) for i in ids], np.float32)[:, None]
    out = {"id": np.array(ids, object), "set": np.array(sets, object)}
    for k, (column, d) in enumerate(dims):
        out[column] = np.sin(x * (k + 1) + np.arange(d, dtype=np.float32)).astype(np.float32)
    return out


def read_key(root, model, s, view):
    """{file name: (ids, vectors)} for one (model, set, view), checking the shard schema."""
    out = {}
    for uri in storage.list_files(storage.join(root, model, s, view)):
        with storage.open_read(uri) as fh:
            table = pq.read_table(fh)
        assert table.schema.field("id").type == pa.string()
        emb = table.column("embedding").combine_chunks()
        assert pa.types.is_fixed_size_list(emb.type) and emb.type.value_type == pa.float32()
        out[os.path.basename(uri)] = (table.column("id").to_pylist(), emb.values.to_numpy().reshape(len(table), -1))
    return out


def rows_of(files) -> tuple[list, np.ndarray]:
    ids = [i for f in files.values() for i in f[0]]
    return ids, np.concatenate([f[1] for f in files.values()])


def test_writer_rolls_files_and_keeps_each_sets_views(tmp_path):
    root = str(tmp_path)
    w = ShardWriter(root, VIEWS, rows_per_file=4, stem="part-00003")
    blocks = [(7, 0), (5, 7), (9, 12)]
    all_ids, all_sets = [], []
    for n, first in blocks:
        ids = [f"r-{first + i}" for i in range(n)]
        sets = ["public" if (first + i) % 3 else "target" for i in range(n)]
        w.add(embedded(ids, sets))
        all_ids += ids
        all_sets += sets
    done = w.close()
    want = Counter(all_sets)
    assert done["rows"] == {("m", "public", "a"): want["public"], ("m", "public", "b"): want["public"],
                            ("n", "public", "b"): want["public"], ("m", "target", "b"): want["target"],
                            ("n", "target", "b"): want["target"]}
    assert not os.path.exists(os.path.join(root, "m", "target", "a"))  # not a view of the target set
    for (model, s, view), n in done["rows"].items():
        files = read_key(root, model, s, view)
        assert sorted(files) == sorted(file_name("part-00003", k) for k in range(math.ceil(n / 4)))
        assert all(len(f[0]) <= 4 for f in files.values())
        ordered = [files[file_name("part-00003", k)] for k in range(len(files))]
        ids = [i for f in ordered for i in f[0]]
        assert ids == [i for i, x in zip(all_ids, all_sets) if x == s]  # every row once, in order
        ref = embedded(ids, [s] * len(ids))[f"{model}/{view}"]
        np.testing.assert_array_equal(np.concatenate([f[1] for f in ordered]), ref)
    assert done["files"] == sum(math.ceil(n / 4) for n in done["rows"].values())


def test_a_retried_task_rewrites_its_files(tmp_path):
    root = str(tmp_path)
    ids = [f"r-{i}" for i in range(10)]
    block = embedded(ids, ["public"] * 10)
    first = ShardWriter(root, VIEWS, rows_per_file=4, stem="part-00000")
    first.add(block)  # two files committed, one still open...
    first.abort()  # ...when the task fails
    assert sorted(read_key(root, "m", "public", "a")) == ["part-00000-1.parquet", "part-00000.parquet"]
    for _ in range(2):  # the retry, and a retry of a task that had finished
        again = ShardWriter(root, VIEWS, rows_per_file=4, stem="part-00000")
        again.add(block)
        again.close()
        got, _ = rows_of(read_key(root, "m", "public", "a"))
        assert sorted(got) == sorted(ids)
    assert not [f for _, _, fs in os.walk(root) for f in fs if f.startswith(".")]  # no temporaries left


def test_the_writer_on_object_storage(s3_env):
    root = f"s3://{BUCKET}/shards"
    ids = [f"r-{i}" for i in range(10)]
    block = embedded(ids, ["public"] * 10)
    first = ShardWriter(root, VIEWS, rows_per_file=4, stem="part-00000")
    first.add(block)
    first.abort()  # the open file's upload is dropped, not committed
    assert sorted(read_key(root, "m", "public", "a")) == ["part-00000-1.parquet", "part-00000.parquet"]
    again = ShardWriter(root, VIEWS, rows_per_file=4, stem="part-00000")
    again.add(block)
    assert again.close()["rows"][("m", "public", "a")] == 10
    files = read_key(root, "m", "public", "a")
    assert len(files) == 3 and sorted(rows_of(files)[0]) == sorted(ids)


def test_a_killed_tasks_temporaries_are_hidden(tmp_path):
    root = str(tmp_path)
    w = ShardWriter(root, VIEWS, rows_per_file=100, stem="part-00001")
    w.add(embedded(["r-1", "r-2"], ["public", "public"]))  # the process dies here: nothing committed
    leftovers = [f for _, _, fs in os.walk(root) for f in fs]
    assert leftovers and all(f.startswith(".part-00001.parquet.tmp-") for f in leftovers)
    assert storage.list_files(root) == []  # readers skip dot files
    w.abort()


def test_the_writer_loads_no_ray():
    import subprocess

    code = "import sys, study.embed.shards\nprint(','.join(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and out.stdout.strip() == "", out.stderr


@pytest.mark.parametrize("resources,use_gpu,cfg,want", [
    ({"CPU": 8.0}, False, EmbedConfig(), (7, 1.0)),  # one CPU stays for reading and decoding
    ({"CPU": 2.0}, False, EmbedConfig(), (1, 1.0)),
    ({"CPU": 1.0}, False, EmbedConfig(), (1, 0.0)),  # Ray Data's listing and reads need the whole CPU
    ({"CPU": 1.5}, False, EmbedConfig(), (1, 0.0)),
    ({"CPU": 64.0, "GPU": 2.0}, False, EmbedConfig(), (63, 1.0)),  # GPUs unused without ray.use_gpu
    ({"CPU": 64.0, "GPU": 2.0}, True, EmbedConfig(), (2, 16.0)),  # one replica per GPU, half its CPUs
    ({"CPU": 96.0, "GPU": 8.0}, True, EmbedConfig(), (8, 6.0)),
    ({"CPU": 16.0, "GPU": 1.0}, True, EmbedConfig(), (1, 8.0)),
    ({"CPU": 2.0, "GPU": 1.0}, True, EmbedConfig(), (1, 1.0)),
    ({"CPU": 8.0, "GPU": 8.0}, True, EmbedConfig(), (8, 0.875)),  # a CPU stays free for the decode tasks
    ({"CPU": 64.0, "GPU": 4.0}, True, EmbedConfig(actors=2, cpus_per_actor=3.0), (2, 3.0)),  # the config wins
    ({"CPU": 64.0, "GPU": 4.0}, True, EmbedConfig(cpus_per_actor=2.0), (4, 2.0)),
])
def test_pool_size(resources, use_gpu, cfg, want):
    assert pool_size(cfg, resources, use_gpu) == want


def test_pool_size_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="ray.use_gpu"):
        pool_size(EmbedConfig(), {"CPU": 8.0}, use_gpu=True)


FRACTIONS = {"target": 0.3, "reference": 0.2, "public": 0.5}
MODES = {"public": "whole", "target": "crop"}


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory):
    """Four record shards of synthetic 32 px scenes and two small untrained SSL encoders."""
    from study.train.methods import method_params
    from study.train.models import build_encoder, save_model

    root = str(tmp_path_factory.mktemp("embed"))
    data = DataConfig(num_images=160, image_size=32, seed=1)
    rows = [make_record(i, data) for i in range(160)]
    for k in range(4):
        chunk = rows[k * 40 : (k + 1) * 40]
        records.write_shard(storage.join(root, "data", f"part-{k:05d}.parquet"),
                            {n: [r[n] for r in chunk] for n in records.RECORD_SCHEMA.names})
    uris = {}
    for seed, model in enumerate(("model_a", "model_b")):
        import torch

        torch.manual_seed(seed)
        enc = build_encoder(ModelConfig(projector_dims=(16, 8)), "vicreg", method_params("vicreg", {}), 10).eval()
        meta = {"method": "vicreg", "params": {}, "model": {"backbone": "small_cnn", "projector_dims": [16, 8]},
                "num_classes": 10, "image_size": 32}
        uris[model] = storage.join(root, f"{model}.pt")
        storage.write_bytes(uris[model], save_model(enc, meta))
    prepare = partial(prepare_batch, plan=SplitPlan(FRACTIONS, 0), modes=MODES,
                      crop_cfg=CropConfig(rule="corner", corner_fraction=0.5), inputs=ModelInput(32))
    return root, uris, prepare


def test_streamed_embeddings_equal_in_memory_reference(ray_local, study_inputs, monkeypatch):
    import ray.data

    root, uris, prepare = study_inputs
    out = storage.join(root, "embed")
    views = {s: ("backbone", "projector") for s in MODES}
    # More replicas than the instance has CPUs, as when a node is gone by the time the pool starts:
    # the pool grows only as far as the CPUs allow (a fixed pool of 3 takes both CPUs and the reads
    # never run; a stall fails here in a minute, not Ray Data's default half hour).
    cfg = EmbedConfig(batch_size=8, rows_per_file=25, write_batch_mb=0.15, actors=3)
    monkeypatch.setattr(ray.data.DataContext.get_current(), "execution_no_progress_timeout_s", 60)
    written = embed_all(storage.join(root, "data"), ["id", "image", "width", "height", "label", "boxes"], prepare,
                        Embedder, {"model_uris": uris}, views, cfg, out, log=lambda m, progress=None: None)

    # The reference: the embedder class over the records in a plain loop, no Ray.
    embedder = Embedder(uris, threads=1)
    ref: dict[tuple, dict[str, np.ndarray]] = {}
    table = records.dataset(storage.join(root, "data")).to_table()
    for start in range(0, table.num_rows, 8):
        got = embedder(prepare(table.slice(start, 8)))
        for column in got:
            if "/" in column:
                model, view = column.split("/")
                for rid, s, v in zip(got["id"], got["set"], got[column]):
                    ref.setdefault((model, s, view), {})[rid] = v
    assert set(written) == set(ref) and len(ref) == 8
    for key, vectors in ref.items():
        files = read_key(out, *key)
        ids, emb = rows_of(files)
        assert written[key] == len(ids) == len(set(ids)) == len(vectors)  # every record once, no duplicates
        assert set(ids) == set(vectors)
        np.testing.assert_allclose(emb, np.stack([vectors[i] for i in ids]), rtol=0, atol=1e-6)
        # Files hold at most rows_per_file rows, and only a write task's last file per key is partial.
        tasks = {name.split(".")[0].split("-")[1] for name in files}
        assert all(len(f[0]) <= cfg.rows_per_file for f in files.values())
        assert max(len(f[0]) for f in files.values()) > cfg.batch_size  # not a file per batch
        assert len(files) <= math.ceil(len(ids) / cfg.rows_per_file) + len(tasks) - 1
    assert not [f for _, _, fs in os.walk(out) for f in fs if not f.endswith(".parquet")]


def _embedded_rows(batch):
    return embedded([f"r-{i}" for i in batch["id"]], ["public" if i % 4 else "target" for i in batch["id"]])


def test_a_killed_write_task_is_retried_without_duplicates(ray_local, tmp_path):
    import ray.data
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    flag = str(tmp_path / "crashed")
    sink = _CrashOnce(str(tmp_path / "embed"), VIEWS, 7, 2 << 10, flag=flag)
    ds = ray.data.range(200, override_num_blocks=8).map_batches(_embedded_rows, batch_format="numpy")
    ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.25})
    assert os.path.exists(flag)  # the first attempt died
    n = {"public": 150, "target": 50}
    assert sink.written == {("m", "public", "a"): 150, ("m", "public", "b"): 150, ("n", "public", "b"): 150,
                            ("m", "target", "b"): 50, ("n", "target", "b"): 50}
    for model, s, view in sink.written:
        ids, _ = rows_of(read_key(str(tmp_path / "embed"), model, s, view))
        assert len(ids) == len(set(ids)) == n[s]


class _CrashOnce(EmbeddingSink):
    """The sink, but the worker running the first write task dies once, in the middle of its files."""

    def __init__(self, *args, flag: str):
        super().__init__(*args)
        self.flag = flag

    def write(self, blocks, ctx):
        from ray.data.block import BlockAccessor

        if ctx.task_idx == 0 and not os.path.exists(self.flag):
            writer = ShardWriter(self.root, self.views_of_set, self.rows_per_file, f"part-{ctx.task_idx:05d}")
            for block in blocks:  # commits some files and leaves others open...
                writer.add(BlockAccessor.for_block(block).to_batch_format("numpy"))
            open(self.flag, "w").close()
            os._exit(1)  # ...when the worker dies
        return super().write(blocks, ctx)
