"""Inputs a study cannot use stop it before any stage, with one line: record columns of the wrong
type, record columns the study kind reads but the shards lack, and the SSL study over records
without labels."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.config import DataConfig
from study.config_load import load_config
from study.data import records, synthetic
from study.errors import DataError
from study.frame.kinds import get_kind
from study.stages.train import check_labels
from study.frame.validate import check_record_columns, check_registries

BOX_WITHOUT_LABEL = pa.struct([(n, pa.float64()) for n in ("x0", "y0", "x1", "y1")])


def write_records(root, change=lambda table: table):
    """Synthetic records as one shard under ``root``, after ``change`` (table -> table)."""
    root.mkdir()
    (_, rows), = synthetic.iter_shards(DataConfig(num_images=20, shard_size=20))
    pq.write_table(change(pa.table(rows, schema=records.RECORD_SCHEMA)), root / "part-00000.parquet")
    return str(root)


def replace(name, array):
    return lambda table: table.set_column(table.schema.get_field_index(name), name, array)


def test_label_stored_as_text_names_the_column(tmp_path):
    root = write_records(tmp_path / "in", lambda t: replace("label", t.column("label").cast(pa.string()))(t))
    with pytest.raises(DataError) as err:
        records.dataset(root)
    assert str(err.value) == f"record shards under {root}: column 'label' is string, expected int32"


def test_boxes_without_a_label_per_box(tmp_path):
    def drop_box_label(t):
        boxes = [[{k: b[k] for k in ("x0", "y0", "x1", "y1")} for b in row] for row in t.column("boxes").to_pylist()]
        return replace("boxes", pa.array(boxes, pa.list_(BOX_WITHOUT_LABEL)))(t)

    box = r"struct<x0: double, y0: double, x1: double, y1: double>"
    with pytest.raises(DataError, match=rf"column 'boxes' is list<\w+: {box}>, expected list<item: struct<"):
        records.dataset(write_records(tmp_path / "in", drop_box_label))


@pytest.mark.parametrize(
    "actual,expected,fits",
    [
        (pa.int64(), pa.int32(), True),
        (pa.float64(), pa.int32(), False),
        (pa.dictionary(pa.int8(), pa.string()), pa.string(), True),
        (pa.large_list(pa.large_string()), pa.list_(pa.string()), True),
        (pa.list_(pa.int32()), pa.list_(pa.string()), False),
        (pa.string(), pa.binary(), False),
        (pa.null(), records.RECORD_SCHEMA.field("boxes").type, True),
        (pa.int64(), pa.string(), False),
    ],
)
def test_column_types_that_fit_the_record_schema(actual, expected, fits):
    assert records.fits(actual, expected) is fits


def test_wider_types_are_accepted(tmp_path):
    root = write_records(tmp_path / "in", lambda t: replace("label", t.column("label").cast(pa.int64()))(t))
    assert records.dataset(root).schema.field("label").type == pa.int64()


def config(root):
    return load_config(None, ["data.source=parquet", f"data.path={root}", "study=ssl_dejavu"])


def test_ssl_study_over_records_without_boxes_stops_up_front(tmp_path):
    root = write_records(tmp_path / "in", lambda t: t.drop_columns(["boxes"]))
    with pytest.raises(DataError, match=r"lack column\(s\) \['boxes'\], which ssl_dejavu needs"):
        check_registries(config(root))
    check_record_columns(config(root), get_kind("vlm_dejavu").record_columns)  # captions and objects only


def test_ssl_study_over_text_labels_stops_up_front(tmp_path):
    root = write_records(tmp_path / "in", lambda t: replace("label", t.column("label").cast(pa.string()))(t))
    with pytest.raises(DataError, match="column 'label' is string, expected int32"):
        check_registries(config(root))


@pytest.mark.parametrize("n,fragment", [(0, "carry no labels (num_classes = 0)"), (1, "carry a single label")])
def test_ssl_study_needs_two_classes(n, fragment):
    with pytest.raises(DataError) as err:
        check_labels(get_kind("ssl_dejavu"), {"num_classes": n}, "/data/in")
    msg = str(err.value)
    assert "/data/in" in msg and fragment in msg and "ssl_dejavu study needs a label per record" in msg
    check_labels(get_kind("ssl_dejavu"), {"num_classes": 2}, "/data/in")
    check_labels(get_kind("vlm_dejavu"), {"num_classes": n}, "/data/in")  # captions, not labels
