"""Near-duplicates across splits: the hash (pure) and the splits stage's pairs against a brute-force
oracle over every planned record, with planted duplicates found and dropped from attacked sets."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from study import storage
from study.config_load import load_config
from study.core.phash import band_keys, close_pairs, dhash, hamming
from study.core.split_plan import QUARANTINED
from study.data import records
from study.data.loading import read_split
from study.frame.context import RunContext
from study.stages.splits import run_splits


def scene(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR))


def test_hash_survives_reencoding_and_brightness_but_not_another_image():
    img = scene(1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    brighter = np.clip(img.astype(int) + 6, 0, 255).astype(np.uint8)
    h = dhash(img)
    assert hamming(np.uint64(h), np.uint64(dhash(jpeg))) <= 4
    assert hamming(np.uint64(h), np.uint64(dhash(brighter))) <= 4
    assert min(hamming(np.uint64(h), np.uint64(dhash(scene(s)))) for s in range(2, 12)) > 4
    assert 0 <= h < 2**64 and dhash(np.zeros((3, 5, 3), np.uint8)) == 0  # tiny images are repeated up


@pytest.mark.parametrize("t", [0, 2, 5])
def test_hashes_within_distance_share_a_band(t):
    rng = np.random.default_rng(t)
    for _ in range(300):
        a = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        flips = rng.choice(64, size=int(rng.integers(0, t + 1)), replace=False)
        b = a
        for f in flips:
            b ^= 1 << int(f)
        assert set(band_keys(a, t)) & set(band_keys(b, t))


def test_close_pairs_equal_brute_force():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 5, dtype=np.int64).astype(np.uint64)
    hashes = np.concatenate([base, base ^ np.uint64(1), base ^ np.uint64(0b1011)])
    groups = np.array(["a"] * 5 + ["b"] * 5 + ["a"] * 5, dtype=object)
    want = [(i, j, int(hamming(hashes[i], hashes[j]))) for i, j in itertools.combinations(range(15), 2)
            if groups[i] != groups[j] and hamming(hashes[i], hashes[j]) <= 3]
    assert sorted(close_pairs(hashes, groups, 3)) == sorted(want)


def test_stage_finds_planted_duplicates_and_drops_attacked_copies(ray_local, tmp_path):
    sets = ["data.num_images=160", "data.image_size=32", "data.shard_size=80", f"output={tmp_path}",
            "splits.fractions={target: 0.25, reference: 0.25, public: 0.5}",
            "splits.near_duplicates={detect: true, max_distance: 4, drop: true}"]
    ctx = RunContext.create(load_config(None, sets))
    from study.stages.data import run_data

    run_data(ctx)
    table = records.dataset(ctx.data_root).to_table()
    plan = ctx.split_plan(thresholds={})
    split = plan.assign(table)
    ids = table.column("id").to_pylist()
    public = [i for i, s in enumerate(split) if s == "public"]
    target = [i for i, s in enumerate(split) if s == "target"]
    reference = [i for i, s in enumerate(split) if s == "reference"]
    images = table.column("image").to_pylist()
    images[target[0]] = images[public[0]]  # an exact copy
    shifted = np.clip(records.decode_image(images[public[1]]).astype(int) + 5, 0, 255).astype(np.uint8)
    images[reference[0]] = records.encode_png(shifted)  # a brighter copy
    cols = table.to_pydict()
    cols["image"] = images
    storage.remove(ctx.data_root)
    records.write_shard(storage.join(ctx.data_root, "part-00000.parquet"), cols)
    manifest = run_splits(ctx)

    # Oracle: every cross-split pair of planned records within 4 bits, by brute force.
    h = np.array([dhash(records.decode_image(b)) for b in images], dtype=np.uint64)
    want = set()
    for i, j in itertools.combinations(range(len(ids)), 2):
        if split[i] != split[j] and hamming(h[i], h[j]) <= 4:
            want.add(tuple(sorted((ids[i], ids[j]))))
    near = manifest["near_duplicates"]
    got = {(e["id_a"], e["id_b"]) for e in near["examples"]}
    assert near["pairs"] == len(want) and got <= want
    assert tuple(sorted((ids[target[0]], ids[public[0]]))) in want
    assert tuple(sorted((ids[reference[0]], ids[public[1]]))) in want
    attacked = {x for pair in want for x in pair if split[ids.index(x)] in ("target", "reference")}
    assert set(near["dropped"]) == attacked
    assert manifest["quarantined"] == {"near_duplicate": len(attacked)}
    members = set(read_split(ctx.splits_dir, "target")[0]) | set(read_split(ctx.splits_dir, "reference")[0])
    assert not attacked & members
    later = ctx.split_plan().assign(records.dataset(ctx.data_root).to_table())  # what the later stages see
    assert {ids[i] for i, s in enumerate(later) if s == QUARANTINED} == attacked
