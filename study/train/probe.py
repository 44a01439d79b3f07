"""Utility beside memorization: a linear probe on a frozen encoder (plain PyTorch, no Ray).

Features of the public records (never trained on by either model) train a multinomial logistic
regression (standardised features, L2 penalty, full-batch L-BFGS: deterministic on CPU); its
accuracy on the holdout records, with a bootstrap interval over them, says how useful the
representation is. The study's SSL measure stage runs it per model and representation.
"""
from __future__ import annotations


import numpy as np
import torch

from study.core.stats import bootstrap_indices, percentile_interval
from study.data.model_input import channels_first
from study.train.models import Encoder, normalize


@torch.inference_mode()
def features(encoder: Encoder, images: np.ndarray, batch: int = 256, scale=normalize) -> dict[str, np.ndarray]:
    """{"backbone": (n, d_h), "projector": (n, d_z)} of model inputs (n, S, S, 3) uint8, scaled by
    ``scale`` (the model's own: ``models.input_scaling``)."""
    encoder.eval()
    hs, zs = [], []
    for start in range(0, len(images), batch):
        h, z = encoder(scale(torch.from_numpy(channels_first(images[start:start + batch]))))
        hs.append(h.float().numpy())
        zs.append(z.float().numpy())
    return {"backbone": np.concatenate(hs), "projector": np.concatenate(zs)}


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                l2: float = 1e-3, steps: int = 200) -> np.ndarray:
    """Predicted classes of ``test_x`` by a logistic regression fitted on (train_x, train_y)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy(((train_x - mean) / std).astype(np.float32))
    y = torch.from_numpy(train_y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # a seeded start: the same probe on every machine
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return linear(torch.from_numpy(((test_x - mean) / std).astype(np.float32))).argmax(1).numpy()


def accuracy_with_interval(correct: np.ndarray, draws: int, level: float, seed: int) -> dict:
    """Mean of ``correct`` with a percentile bootstrap interval over the records."""
    correct = np.asarray(correct, dtype=float)
    idx = bootstrap_indices(len(correct), draws, np.random.default_rng(seed))
    lo, hi = percentile_interval(correct[idx].mean(axis=1), level)
    return {"value": float(correct.mean()), "ci": [float(lo), float(hi)], "n": int(len(correct))}
