"""``dejavu data inspect``: what a study would get from an input, without writing records.

The input is read the way the data stage reads it (``ingest.SOURCES[data.source].read``: records
with a read status), in one streaming Ray Data pass: each task counts its batches
(``data.inspect_stats.batch_stats``) and returns one small JSON row per batch, which the driver
adds up as they arrive, so its memory does not grow with the number of records. The optional
page (``--html``) adds a montage of the first ``sample`` usable records, taken by a second pass
that stops once it has them.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from functools import partial
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from study import storage
from study.config import CropConfig, StudyConfig
from study.core import quality
from study.data import records
from study.data.inspect_stats import batch_stats, finish, merge, render_text, sections
from study.data.records import STATUS
from study.errors import DataError, StudyError

THUMB_MIN = 96  # thumbnails are scaled up until their shorter side is at least this
THUMB_MAX = 256  # and larger images scaled down to this longer side, so the page stays small
BOX_COLOUR = (255, 40, 40)


def _stats_row(batch: pa.Table, crop_cfg: CropConfig, check) -> pa.Table:
    return pa.table({"stats": [json.dumps(batch_stats(batch, crop_cfg, check))]})


def _check_of(study: str):
    """The study kind's own record check (``StudyKind.inspect_check``)."""
    from study.frame.kinds import get_kind, kind_modules

    check = get_kind(study).inspect_check
    if check is None:
        checked = sorted(k for k in kind_modules() if get_kind(k).inspect_check is not None)
        raise StudyError(f"data inspect: the {study} study has no input check; choose from {checked}")
    return check


def _ok_records(batch: pa.Table) -> pa.Table:
    keep = batch.filter(pc.equal(batch.column(STATUS), quality.OK)) if STATUS in batch.column_names else batch
    return keep.select([c for c in records.RECORD_SCHEMA.names if c in keep.column_names])


def _source(cfg: StudyConfig):
    from study.stages.data import SOURCES  # imports Ray: only once the input is to be read

    return SOURCES[cfg.data.source]


def _check_input(cfg: StudyConfig) -> None:
    """Fail with one line, before Ray starts, on an input that cannot be read at all."""
    if _source(cfg).read is None:
        raise StudyError(f"data inspect reads an input; data.source '{cfg.data.source}' generates its records "
                         "(write them with 'dejavu data synth' and inspect that)")
    _check_of(cfg.study)
    uri = storage.absolute(cfg.data.path)
    try:
        if not storage.exists(uri):
            raise DataError(f"input path does not exist: {uri}")
    except (ValueError, ImportError, OSError) as exc:  # an unknown protocol, a missing fsspec backend
        raise DataError(f"cannot open {uri}: {exc}") from None
    _source(cfg).columns(cfg.data)  # the source's own checks: shards present, required columns


def inspect(cfg: StudyConfig, sample: int = 0, log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
    """(summary, the first ``sample`` usable records as rows) of ``cfg.data``'s input."""
    from study.frame.cluster import ensure_ray

    _check_input(cfg)
    ensure_ray(cfg, paths={"data inspect": cfg.data.path, "data.objects": cfg.data.objects})
    ds, _ = _source(cfg).read(cfg.data, log)
    counts = ds.map_batches(partial(_stats_row, crop_cfg=cfg.embed.crop, check=_check_of(cfg.study)), batch_format="pyarrow")
    total = None
    for batch in counts.iter_batches(batch_format="pyarrow"):
        for text in batch.column("stats").to_pylist():
            part = json.loads(text)
            total = part if total is None else merge(total, part)
    if total is None:  # an input without a single record
        total = batch_stats(records.to_record_schema(pa.table({"id": pa.array([], pa.string())})), cfg.embed.crop,
                            _check_of(cfg.study))
    rows: list[dict] = []
    if sample:  # limit() ends the pass once it has them
        ok = ds.map_batches(_ok_records, batch_format="pyarrow").limit(sample)
        for batch in ok.iter_batches(batch_format="pyarrow"):
            rows.extend(batch.to_pylist())
    return finish(total), rows[:sample]


# -- the page ----------------------------------------------------------------------------------
def thumbnail(row: dict) -> str:
    """A record's image with its boxes and their labels drawn, as a PNG data URI."""
    image = Image.fromarray(records.decode_image(row["image"]))
    w, h = image.size
    scale = THUMB_MIN / min(w, h) if min(w, h) < THUMB_MIN else min(1.0, THUMB_MAX / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)  # small scenes stay sharp
    draw = ImageDraw.Draw(image)
    for b in row.get("boxes") or []:
        xs, ys = sorted((b["x0"], b["x1"])), sorted((b["y0"], b["y1"]))
        if not all(math.isfinite(v) for v in (*xs, *ys)):
            continue
        x0, x1 = xs[0] * scale, max(xs[0] * scale, xs[1] * scale - 1)
        y0, y1 = ys[0] * scale, max(ys[0] * scale, ys[1] * scale - 1)
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=2)
        tag = draw.textbbox((x0 + 2, y0 + 2), str(b["label"]))  # the label on a tag, readable on any scene
        draw.rectangle((tag[0] - 1, tag[1] - 1, tag[2] + 1, tag[3] + 1), fill=BOX_COLOUR)
        draw.text((x0 + 2, y0 + 2), str(b["label"]), fill=(255, 255, 255))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure(row: dict) -> str:
    """A record's thumbnail (boxes drawn) with its id, label, objects and caption."""
    img = f'<img src="{thumbnail(row)}" alt="{html.escape(str(row["id"]))}">'  # ok records decode (read status)
    caption = html.escape(row.get("caption") or "(no caption)")
    label = "-" if row.get("label") is None else row["label"]
    objects = ", ".join(row.get("objects") or []) or "-"
    style = "display:inline-block;vertical-align:top;width:min-content;min-width:120px;margin:6px"
    return (f'<figure style="{style}">{img}'
            f'<figcaption style="font-size:12px"><b>{html.escape(str(row["id"]))}</b> label {label}; '
            f"objects {html.escape(objects)}<br>{caption}</figcaption></figure>")


def render_html(summary: dict, rows: list[dict], title: str) -> str:
    """A self-contained page: the statistics as tables, then the montage of sampled records."""
    from study.report.page import STYLE, table

    tables = "".join(f'<div style="display:inline-block;vertical-align:top;margin:0 18px 12px 0">'
                     f"<h3>{html.escape(t)}</h3>"
                     f"{table(['', 'value'], [[html.escape(str(k)), html.escape(str(v))] for k, v in rs])}</div>"
                     for t, rs in sections(summary))
    montage = "".join(figure(r) for r in rows) or "<p>No usable record to show.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>inspect: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>Input inspection: {html.escape(title)}</h1>
<h2>Statistics</h2><div>{tables}</div>
<h2>First {len(rows)} usable records</h2><div>{montage}</div>
</body></html>
"""


def annotate_sample(cfg: StudyConfig, rows: list[dict]) -> tuple[dict, list[dict]]:
    """A preview of ``cfg.annotate``'s annotator on the sampled records, in this process: what it
    found (as the annotate stage's summary counts it) and the rows with its objects and boxes (each
    box labelled with its object's name and score)."""
    from collections import Counter

    from study.annotate.annotators import build
    from study.annotate.detections import side_row
    from study.annotate.vocabulary import load_vocabulary

    a = cfg.annotate
    vocabulary = load_vocabulary(a.vocabulary)
    annotator = build(a, vocabulary)
    images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
    found = [d for b in range(0, len(images), a.batch_size) for d in annotator(images[b:b + a.batch_size])]
    out, frequent = [], Counter()
    for row, det in zip(rows, found):
        side = side_row(row["id"], det, vocabulary.names, a.label_rule)
        frequent.update(side["objects"])
        out.append({**row, "objects": side["objects"], "label": side["label"],
                    "boxes": [{**b, "label": f"{vocabulary.names[b['label']]} {s:.2f}"}
                              for b, s in zip(side["boxes"], side["scores"])]})
    n = len(out)
    summary = {"annotator": a.annotator + (f" ({a.architecture})" if a.architecture else ""),
               "vocabulary": f"{a.vocabulary} ({len(vocabulary)} objects)",
               "thresholds": f"score >= {a.score:g}, NMS at IoU {a.nms_iou:g}, at most {a.max_per_image}",
               "images": n, "with_objects": sum(bool(r["objects"]) for r in out),
               "objects_per_image": round(sum(len(r["objects"]) for r in out) / max(n, 1), 2),
               "most_frequent": frequent.most_common(10)}
    return summary, out


def run_inspect(cfg: StudyConfig, html_out: str | None, sample: int) -> dict:
    """Print the statistics of ``cfg.data``'s input; write the page to ``html_out`` when given.
    With an annotator (``annotate.*``), preview it on the sampled records."""
    if sample < 0:
        raise StudyError(f"data inspect: --sample must be >= 0, got {sample}")
    wanted = sample if html_out or cfg.annotate.on else 0
    summary, rows = inspect(cfg, wanted, log=lambda m: print(m, file=sys.stderr, flush=True))
    if cfg.annotate.on and rows:
        summary["annotation"], rows = annotate_sample(cfg, rows)
    print(f"input {storage.absolute(cfg.data.path)} (data.source {cfg.data.source}, study {cfg.study})")
    print(render_text(summary), end="")
    if html_out:
        out = storage.absolute(html_out)
        page = render_html(summary, rows, f"{cfg.data.source} {storage.absolute(cfg.data.path)}")
        storage.write_bytes(out, page.encode())
        print(f"page with {len(rows)} sampled records: {out}")
    return summary
