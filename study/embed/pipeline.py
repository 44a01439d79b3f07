"""Ray Data edge: stream records through model replicas and write embedding shards.

One pipeline serves every model of the study: read record shards -> ``prepare_batch`` tasks
(split membership, crop, resize) -> an actor pool whose replicas hold all the models -> the
driver writes ``<embed dir>/<model>/<set>/<representation>/part-NNNNN.parquet`` with columns
``id`` and ``embedding`` (fixed-size list of float32), rolling files every ``rows_per_file``.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from ray.data import ActorPoolStrategy

from study import storage
from study.config import EmbedConfig, SplitConfig
from study.data import records
from study.embed.views import prepare_batch
from study.train.models import load_model, normalize

REPRESENTATIONS = ("backbone", "projector")


class Embedder:
    """Loads every model once per replica; each call embeds one batch with all of them."""

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
    model_uris: Mapping[str, str],
    modes: Mapping[str, str],
    split_cfg: SplitConfig,
    cfg: EmbedConfig,
    image_size: int,
    out_root: str,
    use_gpu: bool = False,
    log: Callable[[str], None] = print,
) -> dict[tuple, int]:
    """Embed every record of the sets in ``modes`` with every model; rows written per key."""
    actors, cpus = pool_size(cfg)
    log(f"embedding with {actors} replica(s) x {cpus:g} CPU, batch {cfg.batch_size}")
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns(
        ["id", "image", "width", "height", "label", "boxes"]
    )
    prepare = partial(
        prepare_batch,
        split_seed=split_cfg.seed,
        fractions=split_cfg.fractions,
        modes=dict(modes),
        crop_cfg=cfg.crop,
        image_size=image_size,
    )
    ds = ds.map_batches(prepare, batch_format="pyarrow", batch_size=cfg.batch_size, num_cpus=0.25)
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model_uris": dict(model_uris), "threads": max(1, int(cpus))},
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
        for name in model_uris:
            for rep in REPRESENTATIONS:
                emb = batch[f"{name}/{rep}"]
                for s in np.unique(sets):
                    m = sets == s
                    writers.write((name, s, rep), batch["id"][m], emb[m])
        done += len(sets)
        if time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log(f"embedded {done} records so far ({done / (last_log - start):.0f}/s)")
    log(f"embedded {done} records ({done / (time.perf_counter() - start):.0f}/s)")
    return writers.close()
