"""Stage ``annotate``: ground truth from pixels (runs only with ``annotate.annotator`` set).

Every record shard of the data stage goes through the annotator (``study.annotate``) in a Ray Data
actor pool of ``annotate.replicas`` model copies (``gpus_per_replica``: a GPU or a share of one
each), whole shards at a time, batches of ``batch_size`` images per forward pass. Each shard gives
its side-table file under ``annotate/objects/``, with ``ground_truth: annotator`` its records with
the annotator's objects under ``annotate/records/`` (which every later stage then reads), and last
its counts under ``annotate/counts/``: a shard whose counts are there is done, so a stage stopped
half-way resumes with the shards that are not (shards finish in any order). The driver holds
counts only.

Why the records are written again rather than joined at read time: every later stage reads the
records' objects, boxes and labels with the images (splits, training, crops, the measure stage,
the report's galleries), several times and by id; one copy keeps them all unchanged. The side
table is the part to keep: another study over the same images reads it as ``data.objects``.
"""
from __future__ import annotations

import json
import time

import numpy as np
import ray

from study import storage
from study.annotate.shards import empty_counts, merge
from study.annotate.vocabulary import load_vocabulary
from study.config import AnnotateConfig
from study.data import records
from study.frame.context import RunContext

STARTED = "_started.json"  # the hash of the attempt whose files the stage folder holds
ANNOTATED_SHOWN = 12  # annotated images in the report's gallery


class ShardWorker:
    """A Ray Data actor: the annotator built once; each call annotates whole shards."""

    def __init__(self, cfg: AnnotateConfig, options, threads: int):
        import torch

        from study.annotate.annotators import build

        torch.set_num_threads(threads)
        self.cfg, self.options, self.vocabulary = cfg, options, load_vocabulary(cfg.vocabulary)
        self.annotator = build(cfg, self.vocabulary)
        if cfg.gpus_per_replica > 0 and torch.cuda.is_available():  # the GPU Ray gave this replica
            self.annotator.to("cuda")

    def __call__(self, batch: dict) -> dict:
        from study.annotate.shards import annotate_shard


        out = []
        for src, side, recs, counted in zip(batch["source"], batch["side"], batch["records"], batch["counts"]):
            counts = annotate_shard(self.annotator, self.vocabulary, src, side, recs or None, self.options)
            counts["fingerprint"] = self.annotator.fingerprint  # the weights' hash, with the annotator's settings
            storage.write_json(counted, counts)  # last: the shard is done
            out.append(json.dumps(counts))
        return {"counts": np.array(out, dtype=object)}


def _jobs(ctx: RunContext) -> list[dict]:
    """Per data shard: its source and its three outputs' URIs (named after it, in shard order)."""
    jobs = []
    for i, src in enumerate(records.shard_uris(ctx.ingested_root)):
        name = f"{i:05d}-{src.rsplit('/', 1)[-1]}"
        jobs.append({"source": src, "side": storage.join(ctx.annotations, name),
                     "records": storage.join(ctx.annotated_root, name) if ctx.cfg.annotate.writes_records else "",
                     "counts": storage.join(ctx.stage_dir("annotate", "counts"), name + ".json")})
    return jobs


def _resume_or_start(ctx: RunContext, digest: str) -> None:
    """Keep the files of an earlier attempt with the same hash; remove any other attempt's."""
    started = ctx.stage_dir("annotate", STARTED)
    if storage.exists(started) and storage.read_json(started).get("hash") == digest:
        return
    storage.remove(ctx.stage_dir("annotate"))
    storage.write_json(started, {"hash": digest})


def run_annotate(ctx: RunContext, digest: str) -> dict:
    from study.frame.cluster import check_resources, own_instance

    cfg = ctx.cfg.annotate
    vocabulary = load_vocabulary(cfg.vocabulary)  # a bad vocabulary stops the stage before any replica starts
    bundle = {"CPU": cfg.cpus_per_replica, **({"GPU": cfg.gpus_per_replica} if cfg.gpus_per_replica else {})}
    check_resources(bundle, "an annotator replica", own_instance(ctx.cfg.ray), ctx.cfg.ray.resource_wait_s,
                    lambda message: ctx.log("annotate", message))
    _resume_or_start(ctx, digest)
    jobs = _jobs(ctx)
    todo = [j for j in jobs if not storage.exists(j["counts"])]
    ctx.log("annotate", f"annotating {len(todo)} of {len(jobs)} record shards with {cfg.annotator}"
                        f"{' (' + cfg.architecture + ')' if cfg.architecture else ''} over {len(vocabulary)} objects"
                        + (f"; {len(jobs) - len(todo)} done by an earlier attempt" if len(todo) < len(jobs) else ""))
    if todo:
        # Weights that do not load stop the stage with one line: the annotator is built here once
        # first (a replica's failure reaches the driver as Ray Data's error, without its reason).
        from study.annotate.annotators import build

        build(cfg, vocabulary)
        _annotate(ctx, todo, len(jobs))
    total = empty_counts()
    for job in jobs:
        merge(total, storage.read_json(job["counts"]))
    return summarise(ctx, total, len(jobs), len(todo), vocabulary)


def _options(ctx: RunContext):
    """The shards' options: the crop rule and the input's label names, with crop tags."""
    from study.annotate.shards import ShardOptions
    from study.frame.context import read_marker

    cfg = ctx.cfg.annotate
    names = ((read_marker(ctx.stage_dir("data")) or {}).get("summary") or {}).get("label_names") or ()
    return ShardOptions(cfg.batch_size, cfg.label_rule, cfg.replaces, ctx.cfg.embed.crop if cfg.crop_tags else None,
                        tuple(names))


def _annotate(ctx: RunContext, todo: list[dict], shards: int) -> None:
    cfg = ctx.cfg.annotate
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        ShardWorker,
        fn_constructor_kwargs={"cfg": cfg, "options": _options(ctx), "threads": max(1, int(cfg.cpus_per_replica))},
        batch_size=1,
        batch_format="numpy",
        # From one replica up to ``replicas`` as Ray Data's budget allows: a fixed pool larger than
        # what the nodes hold once it starts would wait without an error.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(cfg.replicas, len(todo))),
        num_cpus=cfg.cpus_per_replica,
        num_gpus=cfg.gpus_per_replica,
    )
    start, done, images = time.perf_counter(), shards - len(todo), 0
    for row in ds.iter_rows():
        done, images = done + 1, images + json.loads(row["counts"])["images"]
        rate = images / max(time.perf_counter() - start, 1e-9)
        ctx.log("annotate", f"annotated {done}/{shards} shards ({images} images, {rate:.1f}/s)",
                progress=(done, shards, "shards"))


def summarise(ctx: RunContext, total: dict, shards: int, annotated: int, vocabulary) -> dict:
    """The stage's summary: the annotator, its thresholds, what it found, and its agreement with
    the input's own objects where the input has them."""
    from study.annotate.quality import agreement

    cfg = ctx.cfg.annotate
    n = total["images"]
    summary = {
        "annotator": cfg.annotator, "architecture": cfg.architecture, "weights": cfg.weights,
        "vocabulary": cfg.vocabulary, "vocabulary_size": len(vocabulary),
        "thresholds": {"score": cfg.score, "nms_iou": cfg.nms_iou, "max_per_image": cfg.max_per_image},
        "ground_truth": cfg.ground_truth, "label_rule": cfg.label_rule,
        "fingerprint": ", ".join(sorted(total.get("fingerprints", ()))),
        "shards": shards, "shards_annotated": annotated, "images": n, "with_objects": total["with_objects"],
        **({"crop_tags": {"records_with_a_crop": total["cropped"], "crop": str(ctx.cfg.embed.crop)}}
           if cfg.crop_tags else {}),
        "objects_per_image": round(sum(int(k) * v for k, v in total["per_image"].items()) / max(n, 1), 4),
        "per_image": {k: total["per_image"][k] for k in sorted(total["per_image"], key=int)},
        "most_frequent": dict(total["objects"].most_common(20)),
        "side_table": ctx.annotations,
    }
    if total["compared"]:
        summary["quality"] = agreement(total)
    ctx.log("annotate", f"{n} images, {total['with_objects']} with objects ({summary['objects_per_image']:.2f} "
                        f"per image); side table in {ctx.annotations}"
                        + (f"; against the input's objects: precision {summary['quality']['precision']:.3f}, "
                           f"recall {summary['quality']['recall']:.3f}" if total["compared"] else ""))
    return summary


def annotated_figures(ctx: RunContext, n: int) -> list[str]:
    """The first ``n`` annotated images with objects, their boxes drawn with the objects' names."""
    import pyarrow.dataset as pads

    from study.annotate.vocabulary import load_vocabulary
    from study.stages.data_inspect import figure

    fs, paths = storage.arrow_fs_paths(sorted(storage.list_files(ctx.annotations)))
    rows = []
    for batch in pads.dataset(paths, filesystem=fs, format="parquet").to_batches():
        rows += [r for r in batch.to_pylist() if r["objects"]][: n - len(rows)]
        if len(rows) >= n:
            break
    if not rows:
        return []
    names = load_vocabulary(ctx.cfg.annotate.vocabulary).names
    found = {r["id"]: r for r in records.read_records(ctx.ingested_root, [r["key"] for r in rows],
                                                      ["id", "image", "caption"]).to_pylist()}
    return [figure({**found[r["key"]], "objects": r["objects"], "label": None,
                    "boxes": [{**b, "label": f"{names[b['label']]} {s:.2f}"} for b, s in zip(r["boxes"], r["scores"])]})
            for r in rows if r["key"] in found]
