"""``dejavu data synth --format F``: the synthetic generator's records in each input layout the
product reads, so every reader is tested on generated files. One entry per format: how to write
it (one Ray task per shard) and the ``--set`` flags that read it back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from study.config import DataConfig


@dataclass(frozen=True)
class SynthFormat:
    write: Callable[[DataConfig, str, str | None, Callable], dict]  # (cfg, output, objects, progress) -> summary
    flags: Callable[[dict], list[str]]  # summary -> the --set flags that read the output back
    describe: Callable[[dict], str]  # summary -> one line for the user


def _img2dataset(layout: str) -> SynthFormat:
    from study.data import synth_write

    source = synth_write.FORMAT_SOURCES[layout]
    return SynthFormat(
        lambda cfg, out, objects, progress: synth_write.write_synthetic(cfg, layout, out, objects, progress),
        lambda s: [f"data.source={source}", f"data.path={s['path']}", f"data.objects={s['objects']}"],
        lambda s: f"{s['records']} records in {s['shards']} {layout} shards under {s['path']}; side table {s['objects']}")


def _coco() -> SynthFormat:
    from study.data.synth_coco import write_coco

    return SynthFormat(
        lambda cfg, out, objects, progress: write_coco(cfg, out, progress),
        lambda s: ["data.source=coco", f"data.path={s['path']}/images", f"data.coco.instances={s['instances']}",
                   f"data.coco.captions={s['captions']}"],
        lambda s: f"{s['records']} records as a COCO dataset under {s['path']}")


def _voc() -> SynthFormat:
    from study.data.synth_voc import write_voc

    return SynthFormat(
        lambda cfg, out, objects, progress: write_voc(cfg, out, progress),
        lambda s: ["data.source=voc", f"data.path={s['path']}", f"data.voc.annotations={s['annotations']}"],
        lambda s: f"{s['records']} records in class folders under {s['path']}, VOC XML under {s['annotations']}")


def _hf() -> SynthFormat:
    from study.data.synth_hf import write_hf

    # The table is built on the driver (save_to_disk writes one dataset): for test and demo sizes.
    return SynthFormat(
        lambda cfg, out, objects, progress: write_hf(cfg, out, "disk"),
        lambda s: ["data.source=hf", f"data.path={s['path']}", "data.hf.columns={objects: objects, boxes: boxes, box_labels: box_labels}"],
        lambda s: f"{s['records']} records as a Hugging Face dataset (save_to_disk) under {s['path']}")


FORMATS: dict[str, Callable[[], SynthFormat]] = {
    "webdataset": lambda: _img2dataset("webdataset"),
    "parquet": lambda: _img2dataset("parquet"),
    "coco": _coco,
    "voc": _voc,
    "hf": _hf,
}
