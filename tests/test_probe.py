"""The linear probe (utility beside memorization) and the SSL report's sweep section."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from study.config import ModelConfig
from study.train.methods import method_params
from study.train.models import build_encoder
from study.train.probe import accuracy_with_interval, features, fit_predict


def _blobs(n: int, seed: int, spread: float):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(3, 8)) * 3
    y = rng.integers(0, 3, n)
    return centres[y] + rng.normal(size=(n, 8)) * spread, y


def test_probe_separates_separable_classes_and_not_noise():
    x, y = _blobs(300, 1, 0.5)
    tx, ty = _blobs(200, 2, 0.5)
    assert (fit_predict(x, y, tx, 3) == ty).mean() > 0.95
    noise_test = np.random.default_rng(3).integers(0, 3, 200)  # labels unrelated to the features
    assert abs((fit_predict(x, y, tx, 3) == noise_test).mean() - 1 / 3) < 0.12
    assert np.array_equal(fit_predict(x, y, tx, 3), fit_predict(x, y, tx, 3))  # deterministic


def test_accuracy_interval_is_the_bootstrap_of_the_mean():
    correct = np.random.default_rng(4).random(400) < 0.7
    got = accuracy_with_interval(correct, 2000, 0.95, seed=5)
    idx = np.random.default_rng(5).integers(0, 400, size=(2000, 400))
    means = correct[idx].mean(axis=1)
    assert got["value"] == pytest.approx(correct.mean()) and got["n"] == 400
    assert got["ci"] == pytest.approx([np.quantile(means, 0.025), np.quantile(means, 0.975)])
    assert got["ci"][0] < got["value"] < got["ci"][1]


def test_features_are_the_encoders_outputs_in_batches():
    enc = build_encoder(ModelConfig(projector_dims=(16, 8)), "simclr", method_params("simclr", {}), 4).eval()
    images = np.stack([np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(5)])
    f = features(enc, images, batch=2)
    assert f["backbone"].shape == (5, 256) and f["projector"].shape == (5, 8)
    from study.train.models import normalize

    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        h, z = enc(normalize(x))
    np.testing.assert_allclose(f["projector"], z.numpy(), atol=1e-5)


def test_sweep_section_shows_every_setting():
    from study.report.sweep_html import sweep_section

    def entry(gap):
        return {"target": 0.5, "reference": 0.5 - gap, "gap": gap, "ci": [gap - 0.1, gap + 0.1], "p_value": 0.01}

    for key, values in (("train.epochs", [10, 20, 40]), ("train.method", ["simclr", "byol"])):
        sweep = {"key": key, "settings": [
            {"name": f"s{v}", "value": v, "headline": {"projector/positive": entry(0.1), "projector/null": entry(0.0)},
             "utility": {"linear_probe": {"projector": {"model_a": {"value": 0.61, "ci": [0.5, 0.7]}}}}}
            for v in values]}
        page = sweep_section({"sweep": sweep})
        assert page.count("<tr>") >= 2 * len(values) and "data:image/png;base64" in page
        assert all(f">{v}<" in page for v in values) and "model_a 0.610 [0.500, 0.700]" in page
    assert sweep_section({}) == ""


def test_report_summary_lists_every_setting_of_an_ssl_sweep():
    from study.kinds.ssl_dejavu.summary import ssl_lines

    def entry(gap):
        return {"target": 0.5, "reference": 0.5 - gap, "gap": gap, "ci": [gap - 0.1, gap + 0.1], "p_value": 0.01}

    settings = [{"name": f"method={m}", "value": m, "headline": {"projector/positive": entry(g)}}
                for m, g in (("simclr", 0.1), ("byol", 0.2))]
    report = {"k": 5, "metric": "l2_normalized", "crop_rule": {"rule": "background"},
              "headline": settings[0]["headline"], "sweep": {"key": "train.method", "settings": settings}}
    text = "\n".join(ssl_lines(report))
    assert "train.method = simclr:" in text and "train.method = byol:" in text and "gap +0.200" in text
