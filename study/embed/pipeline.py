"""Ray Data edge: stream records through model replicas; the pipeline itself writes the embedding shards.

One pipeline serves every model and every study kind: read record shards -> a kind's ``prepare``
tasks (split membership, what the model sees of each record) -> an actor pool whose replicas hold
all the models (the kind's embedder class) -> write tasks that stream their blocks into
``<embed dir>/<model>/<set>/<view>/part-NNNNN[-k].parquet`` (``study.embed.shards``). An embedder
returns ``id``, ``set`` and one ``<model>/<view>`` column per model and view; each set keeps the
views listed for it in ``views_of_set`` (an image row has no text embedding, so its ``text``
column is ignored). The driver sees row counts, never vectors: its memory does not grow with N.

Files: each write task takes about ``embed.write_batch_mb`` of embedded rows (Ray Data bundles the
replicas' blocks up to that size, so files are not one per 256-row batch) and streams them block
by block into files of at most ``embed.rows_per_file`` rows; its own memory is one block plus a
small row-group buffer per open file. Files are named after the write task's index, so a task that
Ray retries rewrites its own files instead of adding rows.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Mapping

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy, Datasink
from ray.data.block import Block, BlockAccessor

from study import retries, storage
from study.config import EmbedConfig
from study.data import records
from study.embed.shards import ShardWriter
from study.errors import ConfigError
from study.train.models import input_scaling, load_model

WRITE_CPUS = 0.25  # a write task mostly waits on I/O and Parquet encoding; the replicas need the CPUs
PROGRESS_SECONDS = 10.0  # between progress lines (an interactive terminal redraws its bar)


class Embedder:
    """SSL encoders: loads every model once per replica; each call embeds one batch of images
    with all of them, as ``<model>/backbone`` and ``<model>/projector``."""

    def __init__(self, model_uris: Mapping[str, str], threads: int):
        torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {}
        for name, uri in model_uris.items():
            model, meta = load_model(storage.read_bytes(uri))
            self.models[name] = (model.to(self.device), input_scaling(meta))  # a model trained elsewhere: its own scaling

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"])).permute(0, 3, 1, 2).to(self.device)
        out = {"id": batch["id"], "set": batch["set"]}
        with torch.inference_mode():
            for name, (model, scale) in self.models.items():
                h, z = model(scale(pixels))
                out[f"{name}/backbone"] = h.float().cpu().numpy()
                out[f"{name}/projector"] = z.float().cpu().numpy()
        return out


def pool_size(
    cfg: EmbedConfig, resources: Mapping[str, float] | None = None, use_gpu: bool = False
) -> tuple[int, float]:
    """(replicas, CPUs per replica) from the config, else from the cluster's ``resources``
    (``ray.cluster_resources()`` when None).

    CPU only: one replica per CPU but one. Replicas that take every CPU starve the read and decode
    tasks and the pipeline stalls without an error, so one whole CPU stays for them: Ray Data's
    file-listing and read tasks each ask for one. A cluster of under two CPUs (a head whose workers
    are gone) gets one replica that reserves no CPU, sharing it with those tasks.
    With ``use_gpu``: one replica per GPU Ray has (each asks for a whole GPU), and half of a GPU's
    share of the CPUs per replica: on GPU nodes decoding, which runs in the prepare tasks, is the
    usual bottleneck, not the replica's CPU-side work. Never so many that no CPU is left for them.
    """
    if resources is None:
        resources = ray.cluster_resources()
    total = float(resources.get("CPU", 1.0))
    if not use_gpu:
        cpus = cfg.cpus_per_actor or (1.0 if total >= 2 else 0.0)
        return cfg.actors or (max(1, int((total - 1.0) // cpus)) if cpus else 1), cpus
    gpus = int(resources.get("GPU", 0))
    if gpus < 1 and not cfg.actors:
        raise ConfigError("ray.use_gpu: the Ray cluster has no GPU (set ray.use_gpu=false; on a cluster that "
                          "adds GPU nodes on demand, set embed.actors to the replicas wanted)")
    actors = cfg.actors or gpus
    if cfg.cpus_per_actor:
        return actors, cfg.cpus_per_actor
    per_gpu = total / max(gpus, actors)
    left_for_replicas = max(total - 1.0, total / 2)
    return actors, min(max(1.0, float(per_gpu // 2)), left_for_replicas / actors)


@ray.remote(num_cpus=0)
class _Tally:
    """Rows embedded so far, told by the replicas, read by the driver's progress log."""

    def __init__(self):
        self.rows = 0

    def add(self, n: int) -> None:
        self.rows += n

    def total(self) -> int:
        return self.rows


class _Replica:
    """A kind's embedder that also tells the tally how many rows each batch held."""

    def __init__(self, embedder: type, embedder_kwargs: Mapping, tally):
        self.embed, self.tally = embedder(**embedder_kwargs), tally

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.embed(batch)
        self.tally.add.remote(len(out["id"]))
        return out


class EmbeddingSink(Datasink):
    """The pipeline's last stage. Each write task streams its blocks into a ``ShardWriter`` whose
    files are named after the task index; the driver gets back rows per (model, set, view)."""

    def __init__(self, root: str, views_of_set: Mapping[str, tuple[str, ...]], rows_per_file: int,
                 bytes_per_write: int):
        self.root, self.views_of_set = root, dict(views_of_set)
        self.rows_per_file, self.bytes_per_write = rows_per_file, bytes_per_write
        self.written: dict[tuple[str, str, str], int] = {}
        self.files = 0

    @property
    def min_bytes_per_write(self) -> int:
        return self.bytes_per_write

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        writer = ShardWriter(self.root, self.views_of_set, self.rows_per_file, f"part-{ctx.task_idx:05d}")
        retried = retries.count()
        try:
            for block in map(BlockAccessor.for_block, blocks):
                if block.num_rows():  # an empty block may have no columns at all
                    writer.add(block.to_batch_format("numpy"))
        except BaseException:
            writer.abort()
            raise
        return {**writer.close(), "store_retries": retries.since(retried)}

    def on_write_complete(self, write_result) -> None:  # on the driver, with every task's return
        for done in write_result.write_returns:
            for key, n in done["rows"].items():
                self.written[key] = self.written.get(key, 0) + n
            self.files += done["files"]
            retries.add(done["store_retries"])  # the stage's summary counts the tasks' retries too


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
    log: Callable[..., None] = lambda message, progress=None: print(message),
    total: int | None = None,
) -> dict[tuple, int]:
    """Embed the records that ``prepare`` keeps with ``embedder``; rows written per (model, set, view).
    Every ``PROGRESS_SECONDS`` ``log`` gets a line and ``progress=(embedded, total, "records")``."""
    actors, cpus = pool_size(cfg, ray.cluster_resources(), use_gpu)
    log(f"embedding with up to {actors} replica(s) x {cpus:g} CPU{' + 1 GPU' if use_gpu else ''}, batch {cfg.batch_size}, "
        f"files of <= {cfg.rows_per_file} rows from ~{cfg.write_batch_mb:g} MiB per write task")
    fs, paths = storage.arrow_fs_paths(records.shard_uris(data_root))
    ds = ray.data.read_parquet(paths, filesystem=fs).select_columns(columns)
    # Rows reach the files in record-shard order, whichever replica finishes first: the search
    # breaks exact ties (identical captions embed identically) by a row's place in the index, so
    # a rerun then retrieves the same records. This pipeline's own context, not the process's.
    ds.context.execution_options.preserve_order = True
    ds = ds.map_batches(prepare, batch_format="pyarrow", batch_size=cfg.batch_size, num_cpus=0.25)
    tally = _Tally.remote()
    ds = ds.map_batches(
        _Replica,
        fn_constructor_kwargs={"embedder": embedder, "embedder_kwargs": {**embedder_kwargs, "threads": max(1, int(cpus))},
                               "tally": tally},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        # From one replica up to ``actors`` as Ray Data's budget allows: a fixed pool sized from the
        # CPUs counted now stalls without an error when fewer are there once it starts (a node lost
        # or released by the autoscaler): its replicas take every CPU and the read tasks never run.
        compute=ActorPoolStrategy(min_size=1, max_size=actors),
        num_cpus=cpus,
        num_gpus=1 if use_gpu else 0,
    )
    bytes_per_write = int(cfg.write_batch_mb * 2**20)
    sink = EmbeddingSink(storage.absolute(out_root), views_of_set, cfg.rows_per_file, bytes_per_write)
    start, stop = time.perf_counter(), threading.Event()

    def progress() -> None:
        while not stop.wait(PROGRESS_SECONDS):
            n = ray.get(tally.total.remote())
            if n:  # before the first batch, the replicas are still loading their models
                log(f"embedded {n} records so far ({n / (time.perf_counter() - start):.0f}/s)",
                    progress=(n, total, "records"))

    reporter = threading.Thread(target=progress, daemon=True)
    reporter.start()
    try:
        ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
        n = ray.get(tally.total.remote())
    finally:
        stop.set()
        reporter.join()
        ray.kill(tally)
    log(f"embedded {n} records into {sink.files} files ({n / (time.perf_counter() - start):.0f}/s)")
    return sink.written
