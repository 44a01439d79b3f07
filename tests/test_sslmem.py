"""SSLMem's maths (study.core.sslmem) against naive oracles, and its scorer (study.embed.alignment)
against an in-memory computation: views keyed by record, not batch; both encoders see the same
views; intermediate layers hooked as the forward pass computes them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from study.config import AugmentConfig, ModelConfig
from study.core import sslmem
from study.embed.alignment import AlignmentScorer, Representations, check_layers, record_views, view_name
from study.errors import ConfigError
from study.train.methods import method_params
from study.train.models import build_encoder, normalize, save_model


def test_alignment_matches_a_loop():
    rng = np.random.default_rng(0)
    x, views = rng.normal(size=(4, 6)), rng.normal(size=(3, 4, 6))
    want = []
    for i in range(4):
        xi = x[i] / np.linalg.norm(x[i])
        want.append(np.mean([np.linalg.norm(views[v, i] / np.linalg.norm(views[v, i]) - xi) for v in range(3)]))
    np.testing.assert_allclose(sslmem.alignment(x, views), want, rtol=1e-12)
    # a view equal to the record (up to scale) is perfectly aligned; an opposite one is 2 away
    assert sslmem.alignment(x[:1], 3 * x[None, :1])[0] == pytest.approx(0, abs=1e-12)
    assert sslmem.alignment(x[:1], -x[None, :1])[0] == pytest.approx(2.0)


def test_scores_raw_and_normalised():
    raw, norm = sslmem.scores([0.2, 0.5, 0.0], [0.6, 0.5, 0.0])
    np.testing.assert_allclose(raw, [0.4, 0.0, 0.0])
    np.testing.assert_allclose(norm, [0.5, 0.0, 0.0])  # 0.4 / 0.8; both 0 -> 0, not nan


def test_auc_matches_all_pairs():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)  # many ties
    pairs = [(x > y) + 0.5 * (x == y) for x, y in itertools.product(a, b)]
    assert sslmem.auc(a, b) == pytest.approx(np.mean(pairs))


def test_high_share_counts_above_the_control_quantile():
    control = np.arange(100, dtype=float)  # 0.9 quantile = 89.1
    assert sslmem.high_share(np.array([89.0, 89.5, 95.0, 200.0]), control, 0.9) == 0.75


def test_compare_detects_a_planted_shift_and_not_a_null():
    rng = np.random.default_rng(2)
    control = rng.normal(size=300)
    shifted = sslmem.compare(rng.normal(0.5, 1, 300), control, 200, 500, 0.95, 0, 0.95)
    assert shifted["mean_difference"]["p_value"] < 0.01 and shifted["mean_difference"]["ci"][0] > 0
    assert shifted["auc"]["ci"][0] > 0.5 and shifted["high_share"]["value"] > 0.05
    null = sslmem.compare(rng.normal(size=300), control, 200, 500, 0.95, 0, 0.95)
    lo, hi = null["mean_difference"]["ci"]
    assert lo <= 0 <= hi and null["mean_difference"]["p_value"] > 0.05
    assert null["high_share"]["expected"] == pytest.approx(0.05)


def test_compare_p_value_matches_exhaustive_permutations():
    a, b = np.array([3.0, 1.0, 4.0, 1.5]), np.array([0.5, 0.2, 2.0])
    pooled, observed = np.concatenate([a, b]), a.mean() - b.mean()
    extreme = [abs(pooled[list(c)].mean() - np.delete(pooled, list(c)).mean()) >= abs(observed) - 1e-12
               for c in itertools.combinations(range(7), 4)]
    exact = np.mean(extreme)  # 35 equally likely relabellings
    p = sslmem.compare(a, b, 10, 20000, 0.95, 3, 0.9)["mean_difference"]["p_value"]
    assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-3


def test_describe_histogram_and_ranking():
    v = np.array([0.3, -0.1, 0.2, 0.0])
    d = sslmem.describe(v, 100, 0.95, 0, 0)
    assert d["n"] == 4 and d["mean"]["value"] == pytest.approx(0.1) and d["quantiles"]["0.5"] == pytest.approx(0.1)
    assert d["mean"]["ci"][0] <= 0.1 <= d["mean"]["ci"][1]
    h = sslmem.histogram({"a": v, "b": np.array([1.0]), "c": np.zeros(0)}, 5)
    assert len(h["edges"]) == 6 and h["edges"][0] == -0.1 and h["edges"][-1] == 1.0
    assert sum(h["shares"]["a"]) == pytest.approx(1) and sum(h["shares"]["c"]) == 0
    assert sslmem.most_memorized(["d", "c", "b", "a"], np.array([0.5, 0.9, 0.5, 0.1]), 3) == [1, 2, 0]  # ties by id


def _encoder(seed: int):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="small_cnn", projector_dims=(32, 16))
    return build_encoder(cfg, "simclr", method_params("simclr", {}), 2).eval()


def test_views_depend_on_the_record_not_its_batch():
    x = normalize(torch.randint(0, 255, (5, 3, 16, 16), dtype=torch.uint8))
    ids = ["r0", "r1", "r2", "r3", "r4"]
    aug = AugmentConfig()
    whole = record_views(x, ids, 3, aug, seed=7)
    part = record_views(x[[3, 1]], [ids[3], ids[1]], 3, aug, seed=7)
    assert torch.equal(whole[:, [3, 1]], part)
    assert not torch.equal(record_views(x, ids, 3, aug, seed=8), whole)  # the seed changes them
    assert not torch.equal(whole[0], whole[1])  # views differ from one another


def test_batched_views_equal_one_record_at_a_time():
    """Parameters drawn per record, applied to the batch at once: the same views as augmenting each
    record alone with its own generator (the oracle), with every jitter on."""
    from study.core.splits import id_hash64
    from study.train.augment import random_view

    x = normalize(torch.randint(0, 255, (6, 3, 16, 16), dtype=torch.uint8))
    ids = [f"r{i}" for i in range(6)]
    aug = AugmentConfig(saturation=0.3, grayscale_prob=0.5)
    got = record_views(x, ids, 3, aug, seed=2)
    keys = id_hash64(ids) ^ np.uint64(2 * 0x9E3779B97F4A7C15 % 2**64)
    for i, key in enumerate(keys):
        gen = torch.Generator().manual_seed(int(key >> np.uint64(1)))
        alone = random_view(x[i:i + 1].expand(3, -1, -1, -1), aug, gen)  # its three views in one draw
        torch.testing.assert_close(got[:, i], alone, rtol=0, atol=1e-6)


def test_layers_are_hooked_as_the_forward_pass_computes_them():
    enc = _encoder(0)
    x = torch.randn(4, 3, 16, 16)
    reps = Representations(enc, ["backbone.5"])  # after the second conv block's ReLU
    got = reps(x, ["backbone", "backbone.5"])
    with torch.no_grad():
        manual = enc.backbone[:6](x).mean(dim=(2, 3))
        h, _ = enc(x)
    np.testing.assert_allclose(got["backbone.5"], manual.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["backbone"], h.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="sslmem.layers: \\['backbone.99'\\]"):
        check_layers(enc, ["backbone.99"])


def test_scorer_equals_an_in_memory_computation(tmp_path):
    uris = {}
    for name, seed in (("model_a", 0), ("model_b", 1)):
        uris[name] = str(tmp_path / f"{name}.pt")
        meta = {"method": "simclr", "params": {}, "model": {"backbone": "small_cnn", "projector_dims": [32, 16]},
                "num_classes": 2}
        (tmp_path / f"{name}.pt").write_bytes(save_model(_encoder(seed), meta))
    aug = AugmentConfig()
    pixels = np.random.default_rng(3).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    ids = np.array([f"id{i}" for i in range(6)], dtype=object)
    scorer = AlignmentScorer(uris, 1, ["projector", "backbone.2"], 4, aug, seed=5)
    out = scorer({"id": ids, "set": np.array(["target"] * 6, dtype=object), "pixels": pixels})
    x = normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    views = record_views(x, list(ids), 4, aug, 5)
    for name, seed in (("model_a", 0), ("model_b", 1)):
        enc = _encoder(seed)
        with torch.no_grad():
            z, zv = enc(x)[1].numpy(), np.stack([enc(v)[1].numpy() for v in views])
            b2 = enc.backbone[:3](x).mean(dim=(2, 3)).numpy()
            b2v = np.stack([enc.backbone[:3](v).mean(dim=(2, 3)).numpy() for v in views])
        np.testing.assert_allclose(out[f"{name}/{view_name('projector')}"][:, 0], sslmem.alignment(z, zv), rtol=1e-5)
        np.testing.assert_allclose(out[f"{name}/{view_name('backbone.2')}"][:, 0], sslmem.alignment(b2, b2v), rtol=1e-5)


def test_draws_in_pieces_stack_into_the_whole():
    """The measure stage's tasks each draw a range of draw numbers: any split of the ranges, an
    empty piece included, gives the numbers of one piece."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.3, 1, 90), rng.normal(0, 1, 70)
    whole = sslmem.compare(a, b, 60, 80, 0.9, 3, 0.9)
    pieces = [(range(0, 25), range(0, 0)), (range(25, 25), range(0, 33)), (range(25, 60), range(33, 80))]
    drawn = [sslmem.compare_draws(a, b, rb, rp, 3, 0.9) for rb, rp in pieces]
    got = sslmem.compare_summary(sslmem.compare_observed(a, b, 0.9), np.concatenate([d[0] for d in drawn]),
                                 np.concatenate([d[1] for d in drawn]), 0.9, 0.9)
    assert got == whole
    means = np.concatenate([sslmem.describe_draws(a, rb, 3, 1) for rb, _ in pieces])
    assert sslmem.describe_summary(sslmem.describe_observed(a), means, 0.9) == sslmem.describe(a, 60, 0.9, 3, 1)
    assert not np.array_equal(sslmem.describe_draws(a, range(5, 10), 3, 1), sslmem.describe_draws(a, range(5), 3, 1))


def test_the_published_normalisation_by_hand():
    from study.core.sslmem import range_normalised

    # Candidates' raw scores 0.1, 0.5, 0.3: range 0.4; every set divided by it. The authors' mean
    # memorization score is then (0.1 + 0.5 + 0.3) / 3 / 0.4 = 0.75.
    got = range_normalised({"candidates": np.array([0.1, 0.5, 0.3]), "independent": np.array([0.2, -0.2])})
    np.testing.assert_allclose(got["candidates"], [0.25, 1.25, 0.75])
    np.testing.assert_allclose(got["independent"], [0.5, -0.5])
    assert got["candidates"].mean() == pytest.approx(0.75)
    same = range_normalised({"candidates": np.array([0.3, 0.3]), "independent": np.array([0.1])})
    np.testing.assert_allclose(same["independent"], [0.1])  # no range: left as they are


def test_the_resampled_auc_is_the_auc_of_the_resamples_exactly():
    """The linear-time AUC of a bootstrap draw (one sort of the control, counts per draw) against
    ``auc`` on the resampled arrays, on scores with many ties: the same float, every draw."""
    from study.core import stats
    from study.core.sslmem import ResampledAuc, auc, compare_draws

    rng = np.random.default_rng(11)
    a, b = np.round(rng.normal(0.2, 1, 700), 1), np.round(rng.normal(0, 1, 900), 1)  # ties within and across
    fast = ResampledAuc(a, b)
    for d in range(25):
        ia = stats.resample_indices(len(a), stats.draw_rng(3, stats.BOOTSTRAP, 0, d))
        ib = stats.resample_indices(len(b), stats.draw_rng(3, stats.BOOTSTRAP, 1, d))
        assert fast(ia, ib) == auc(a[ia], b[ib])
    boot, _ = compare_draws(a, b, range(25), range(0), 3, 0.9)
    by_loop = [auc(a[stats.resample_indices(len(a), stats.draw_rng(3, stats.BOOTSTRAP, 0, d))],
                   b[stats.resample_indices(len(b), stats.draw_rng(3, stats.BOOTSTRAP, 1, d))]) for d in range(25)]
    assert boot[:, 1].tolist() == by_loop
