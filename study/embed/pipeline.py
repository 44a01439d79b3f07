"""Ray Data edge: stream records through model replicas and write embedding shards.

One pipeline serves every model and every study kind: read record shards -> a kind's ``prepare``
tasks (split membership, what the model sees of each record) -> an actor pool whose replicas hold
all the models (the kind's embedder class) -> the driver writes
``<embed dir>/<model>/<set>/<view>/part-NNNNN.parquet`` with columns ``id`` and ``embedding``
(fixed-size list of float32), rolling files every ``rows_per_file``. An embedder returns ``id``,
``set`` and one ``<model>/<view>`` column per model and view; each set keeps the views listed for
it in ``views_of_set`` (an image row has no text embedding, so its ``text`` column is ignored).
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy

from study import storage
from study.config import EmbedConfig
from study.data import records
from study.train.models import load_model, normalize

class Embedder:
    """SSL encoders: loads every model once per replica; each call embeds one batch of images
    with all of them, as ``<model>/backbone`` and ``<model>/projector``."""

    def __init__(self, model_uris: Mapping[str, str], threads: int):
        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {name: load_model(storage.read_bytes(uri))[0].to(self.device) for name, uri in model_uris.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = normalize(torch.from_numpy(np.ascontiguousarray(batch["pixels"])).permute(0, 3, 1, 2)).to(self.device)
        out = {"id": batch["id"], "set": batch["set"]}
        with torch.inference_mode():
            for name, model in self.models.items():
                h, z = model(x)
                out[f"{name}/backbone"] = h.float().cpu().numpy()
                out[f"{name}/projector"] = z.float().cpu().numpy()
        return out


def pool_size(cfg: EmbedConfig) -> tuple[int, float]:
    """(replicas, CPUs per replica), from the config or from the CPUs Ray has.

    On a small machine, replicas that take every CPU starve the read tasks and the pipeline stalls
    without an error, so by default one CPU (or half of a single one) stays for reading.
    """
    total = float(ray.cluster_resources().get("CPU", 1.0))
    cpus = cfg.cpus_per_actor or (1.0 if total >= 2 else total / 2)
    actors = cfg.actors or max(1, int((total - 1.0) // cpus))
    return actors, cpus


class _Writers:
    """Rolling Parquet writers keyed by (model, set, representation)."""

    def __init__(self, root: str, rows_per_file: int):
        self.root, self.rows_per_file = root, rows_per_file
        self.open: dict[tuple, tuple] = {}
        self.counts: dict[tuple, int] = {}
        self.files: dict[tuple, int] = {}

    def write(self, key: tuple, ids: np.ndarray, emb: np.ndarray) -> None:
        if key in self.open and self.counts[key] % self.rows_per_file == 0:
            self._close(key)
        if key not in self.open:
            n = self.files.get(key, 0)
            self.files[key] = n + 1
            uri = storage.join(self.root, *key, f"part-{n:05d}.parquet")
            storage.makedirs(storage.join(self.root, *key))
            fs, path = storage.fs_and_path(uri)
            fh = fs.open(path, "wb")
            schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), emb.shape[1]))])
            self.open[key] = (fh, pq.ParquetWriter(fh, schema))
        table = pa.table(
            {
                "id": pa.array(ids.astype(str), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(emb.astype(np.float32).ravel()), emb.shape[1]
                ),
            }
        )
        self.open[key][1].write_table(table)
        self.counts[key] = self.counts.get(key, 0) + len(ids)

    def _close(self, key: tuple) -> None:
        fh, writer = self.open.pop(key)
        writer.close()
        fh.close()

    def close(self) -> dict[tuple, int]:
        for key in list(self.open):
            self._close(key)
        return dict(self.counts)


def embed_all(
    data_root: str,
    columns: list[str],
    prepare: Callable,
    embedder: type,
    embedder_kwargs: Mapping,
    views_of_set: Mapping[str, tuple[str, ...]],
    cfg: EmbedConfig,
    out_root: str,
    use_gpu: bool = False,
    log: Callable[[str], None] = print,
) -> dict[tuple, int]:
    """Embed the records that ``prepare`` keeps with ``embedder``; rows written per (model, set, view)."""
    actors, cpus = pool_size(cfg)
    log(f"embedding with {actors} replica(s) x {cpus:g} CPU, batch {cfg.batch_size}")
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns(columns)
    ds = ds.map_batches(prepare, batch_format="pyarrow", batch_size=cfg.batch_size, num_cpus=0.25)
    ds = ds.map_batches(
        embedder,
        fn_constructor_kwargs={**embedder_kwargs, "threads": max(1, int(cpus))},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=1 if use_gpu else 0,
    )
    writers = _Writers(out_root, cfg.rows_per_file)
    start, done, last_log = time.perf_counter(), 0, 0.0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        sets = batch["set"].astype(str)
        for s in np.unique(sets):
            m = sets == s
            for column in batch:
                if "/" not in column:
                    continue
                model, view = column.split("/", 1)
                if view in views_of_set[s]:
                    writers.write((model, s, view), batch["id"][m], batch[column][m])
        done += len(sets)
        if time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log(f"embedded {done} records so far ({done / (last_log - start):.0f}/s)")
    log(f"embedded {done} records ({done / (time.perf_counter() - start):.0f}/s)")
    return writers.close()
