"""The annotate stage's parts on hand-worked cases: the vocabulary (synonyms to one canonical name,
the file format, its errors) and the detections an annotator keeps (one class per proposal, the
score threshold, per-object NMS, the per-image cap, the side table's row)."""
from __future__ import annotations

import numpy as np
import pytest

from study.annotate.detections import Detections, Thresholds, keep, one_class_per_proposal, side_row
from study.annotate.vocabulary import coco, load_vocabulary, normalise, parse
from study.errors import ConfigError

FILE = """# objects of a street scene
tv: television, TV monitor
dog
traffic light: traffic_signal   # a synonym written with '_'
Hot-Dog
"""


def test_synonyms_map_to_one_canonical_name():
    v = parse(FILE, "test")
    assert v.names == ("tv", "dog", "traffic light", "hot dog")
    assert [v.canonical(n) for n in ("Television", "tv  monitor", "TRAFFIC SIGNAL", "hot_dog", "cat")] == [0, 0, 2, 3, None]
    assert v.queries() == [("tv", 0), ("television", 0), ("tv monitor", 0), ("dog", 1), ("traffic light", 2),
                           ("traffic signal", 2), ("hot dog", 3)]
    assert normalise("  Fire_Hydrant ") == "fire hydrant"


@pytest.mark.parametrize("text, message", [
    ("dog\ndog\n", "'dog' names both"),
    ("tv: screen\nmonitor: screen\n", "'screen' names both 'tv' and 'monitor'"),
    ("# nothing\n\n", "names no object"),
    (": television\n", "an empty object name"),
])
def test_a_bad_vocabulary_file_is_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text, "vocabulary words.txt")


def test_vocabularies_by_name_or_from_a_file(tmp_path):
    v = coco()
    assert len(v) == 80 and v.names[0] == "person" and v.names[-1] == "toothbrush"
    assert "n/a" not in v.names and v.canonical("Traffic Light") == v.names.index("traffic light")
    path = tmp_path / "words.txt"
    path.write_text(FILE)
    assert load_vocabulary(str(path)).names == ("tv", "dog", "traffic light", "hot dog")
    with pytest.raises(ConfigError, match=r"cannot read the vocabulary .*missing\.txt.*give coco or a text file"):
        load_vocabulary(str(tmp_path / "missing.txt"))


def test_each_proposal_counts_as_its_best_query_s_object_only():
    # Queries: tv, television, dog (objects 0, 0, 1). Proposal 0's best is "television" (tv);
    # proposal 1 ties tv/dog at 0.6: the first query wins; proposal 2 is a dog.
    scores = np.array([[0.2, 0.7, 0.65], [0.6, 0.1, 0.6], [0.1, 0.1, 0.9]])
    best, objects = one_class_per_proposal(scores, np.array([0, 0, 1]))
    np.testing.assert_allclose(best, [0.7, 0.6, 0.9], rtol=1e-6)
    assert objects.tolist() == [0, 0, 1]
    empty = one_class_per_proposal(np.zeros((0, 3)), np.array([0, 0, 1]))
    assert len(empty[0]) == 0 and len(empty[1]) == 0


def test_threshold_nms_per_object_and_the_cap_worked_by_hand():
    boxes = np.array([
        [0, 0, 10, 10],  # a: dog 0.9
        [1, 0, 11, 10],  # b: dog 0.8, IoU with a = 90 / 110 = 0.818 > 0.5: suppressed
        [1, 0, 11, 10],  # c: tv 0.7, the same place as b but another object: kept
        [5, 0, 15, 10],  # d: dog 0.6, IoU with a = 50 / 150 = 0.333: kept
        [20, 20, 30, 30],  # e: tv 0.5, exactly at the threshold: kept
        [40, 40, 50, 50],  # f: dog 0.49, under it: dropped
    ], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.49])
    objects = np.array([1, 1, 0, 1, 0, 1])
    got = keep(boxes, scores, objects, Thresholds())
    np.testing.assert_allclose(got.scores, [0.9, 0.7, 0.6, 0.5], rtol=1e-6)
    assert got.objects.tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(got.boxes, boxes[[0, 2, 3, 4]])
    # IoU 0.818 passes a 0.85 NMS threshold: b is kept then.
    assert keep(boxes, scores, objects, Thresholds(nms_iou=0.85)).scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    capped = keep(boxes, scores, objects, Thresholds(max_per_image=2))
    assert capped.scores.tolist() == pytest.approx([0.9, 0.7])
    # Equal scores: the earlier proposal first, and it suppresses the later one of its object
    # (d and a overlap by IoU 0.333: over an NMS threshold of 0.3, under one of 0.4).
    for order in ([3, 0], [0, 3]):
        tie = keep(boxes[order], np.array([0.7, 0.7]), np.array([1, 1]), Thresholds(nms_iou=0.3))
        np.testing.assert_array_equal(tie.boxes, boxes[order[:1]])
        tie = keep(boxes[order], np.array([0.7, 0.7]), np.array([1, 1]), Thresholds(nms_iou=0.4))
        np.testing.assert_array_equal(tie.boxes, boxes[order])
    assert len(keep(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), Thresholds())) == 0


def test_the_side_table_row_names_distinct_canonical_objects_and_a_label():
    names = ("tv", "dog", "traffic light")
    det = Detections(np.array([[0, 0, 10, 10], [0, 0, 30, 30], [5, 5, 8, 8]], np.float32),
                     np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 2, 1]))
    row = side_row("000123", det, names)
    assert row["key"] == "000123" and row["objects"] == ["dog", "traffic light"]
    assert [b["label"] for b in row["boxes"]] == [1, 2, 1] and row["boxes"][1]["x1"] == 30.0
    assert row["label"] == 2  # the largest box: the traffic light
    assert side_row("k", det, names, "most_frequent")["label"] == 1  # two dogs
    empty = side_row("k", Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int)), names)
    assert empty["objects"] == [] and empty["boxes"] == [] and empty["label"] is None


def test_agreement_with_the_input_worked_by_hand_and_shown_in_the_report():
    from collections import Counter

    from study.annotate.quality import agreement
    from study.report.annotation_html import annotation_lines, annotation_section

    counts = {"compared": 5, "tp": Counter(dog=2, cat=1), "fp": Counter(dog=1), "fn": Counter(cat=1, tv=2),
              "outside": Counter(zebra=3)}
    q = agreement(counts)
    assert (q["tp"], q["fp"], q["fn"]) == (3, 1, 3)
    assert q["precision"] == 0.75 and q["recall"] == 0.5  # 3 / (3 + 1), 3 / (3 + 3)
    assert q["macro_precision"] == round((2 / 3 + 1) / 2, 6)  # dog 2/3, cat 1/1 (tv never reported: none)
    assert q["macro_recall"] == 0.5  # dog 2/2, cat 1/2, tv 0/2
    assert q["per_object"]["tv"] == {"tp": 0, "fp": 0, "fn": 2, "precision": None, "recall": 0.0}
    summary = {"annotator": "transformers", "architecture": "", "weights": "s3://m/owl", "vocabulary": "coco",
               "vocabulary_size": 80, "thresholds": {"score": 0.5, "nms_iou": 0.5, "max_per_image": 100},
               "ground_truth": "input", "images": 5, "with_objects": 4, "objects_per_image": 1.2,
               "most_frequent": {"dog": 3, "cat": 1}, "side_table": "s3://runs/x/annotate/objects", "quality": q}
    lines = annotation_lines({"annotation": summary})
    assert lines[0].startswith("annotation: transformers, weights s3://m/owl, vocabulary coco (80 objects), score >= 0.5")
    assert "the study's ground truth: the input's" in lines[0]
    assert "precision 0.750, recall 0.500 (per-object means 0.833, 0.500); 3 of the input's names are outside" in lines[2]
    page = annotation_section({"annotation": summary}, ["<figure>x</figure>"])
    assert "<td>tv</td><td>0</td><td>0</td><td>2</td><td>-</td><td>0.000</td>" in page.replace("\n", "")
    assert "zebra 3" in page and page.count("<figure>") == 1
