"""The report's annotation part, for a study whose ground truth an annotator found (the annotate
stage's summary under ``report["annotation"]``): the annotator, its vocabulary and thresholds,
what it found (objects per image, the most frequent objects), its agreement with the input's own
objects where the input has them, and a gallery of annotated images with their boxes. Takes plain
data: the gallery's figures come rendered (``study.stages.annotate_report``)."""
from __future__ import annotations

import html

from study.report.page import table


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _thresholds(a: dict) -> str:
    t = a["thresholds"]
    return f"score >= {t['score']:g}, NMS per object at IoU {t['nms_iou']:g}, at most {t['max_per_image']} per image"


def annotation_lines(report: dict) -> list[str]:
    """The same, as text lines for ``dejavu report`` and ``dejavu data annotate``."""
    a = report.get("annotation")
    if not a:
        return []
    model = f"{a['annotator']}" + (f" ({a['architecture']})" if a.get("architecture") else "")
    lines = [f"annotation: {model}, weights {a['weights']}, vocabulary {a['vocabulary']} ({a['vocabulary_size']} objects), "
             f"{_thresholds(a)}; the study's ground truth: the {'annotator' if a['ground_truth'] == 'annotator' else 'input'}'s",
             f"  {a['images']} images, {a['with_objects']} with objects, {a['objects_per_image']:.2f} objects per image; "
             f"most frequent: " + ", ".join(f"{k} {v}" for k, v in list(a["most_frequent"].items())[:8])]
    q = a.get("quality")
    if q:
        lines.append(f"  against the input's own objects ({q['images']} images): precision {_ratio(q['precision'])}, "
                     f"recall {_ratio(q['recall'])} (per-object means {_ratio(q['macro_precision'])}, "
                     f"{_ratio(q['macro_recall'])})" + (f"; {sum(q['outside_vocabulary'].values())} of the input's "
                                                        "names are outside the vocabulary" if q["outside_vocabulary"] else ""))
    return lines


def annotation_section(report: dict, figures: list[str]) -> str:
    a = report.get("annotation")
    if not a:
        return ""
    rows = [["annotator", html.escape(a["annotator"] + (f" ({a['architecture']})" if a.get("architecture") else ""))],
            ["weights", html.escape(str(a["weights"]))],
            ["vocabulary", html.escape(f"{a['vocabulary']} ({a['vocabulary_size']} objects)")],
            ["thresholds", html.escape(_thresholds(a))],
            ["ground truth of the study", html.escape(a["ground_truth"])],
            ["images", str(a["images"])], ["with objects", str(a["with_objects"])],
            ["objects per image", f"{a['objects_per_image']:.2f}"],
            ["side table", html.escape(str(a["side_table"]))]]
    frequent = table(["object", "images"], [[html.escape(k), str(v)] for k, v in a["most_frequent"].items()])
    out = (f"<h2>Annotation</h2><p>The objects of every image were found by the annotator below "
           f"(the annotate stage).</p>{table(['', ''], rows)}<h3>Most frequent objects</h3>{frequent}")
    q = a.get("quality")
    if q:
        per = sorted(q["per_object"].items(), key=lambda kv: -(kv[1]["tp"] + kv[1]["fn"]))
        out += (f"<h3>Agreement with the input's own objects</h3><p>Over {q['images']} images that carry objects "
                f"of their own, at the level of each image's set of objects: precision {_ratio(q['precision'])}, "
                f"recall {_ratio(q['recall'])} (means over objects: {_ratio(q['macro_precision'])}, "
                f"{_ratio(q['macro_recall'])}).</p>"
                + table(["object", "both", "annotator only", "input only", "precision", "recall"],
                        [[html.escape(o), str(v["tp"]), str(v["fp"]), str(v["fn"]), _ratio(v["precision"]),
                          _ratio(v["recall"])] for o, v in per])
                + (f"<p>Names of the input outside the vocabulary (images): "
                   f"{html.escape(', '.join(f'{k} {v}' for k, v in q['outside_vocabulary'].items()))}</p>"
                   if q["outside_vocabulary"] else ""))
    if figures:
        out += f"<h3>Annotated images</h3><div>{''.join(figures)}</div>"
    return out
