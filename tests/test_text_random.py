"""Caption token randomization: rates, determinism per (seed, epoch, key), batching invariance."""
from __future__ import annotations

import numpy as np
import pytest

from study.core.text_random import MODES, randomize_tokens, word_positions

SOT, EOT, MASK = 49406, 49407, 1


def fake_tokens(n, L=32, seed=0):
    """open_clip-like rows: start, a random number of words, end, zero padding."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, L), dtype=np.int64)
    for i in range(n):
        w = int(rng.integers(3, L - 2))
        tokens[i, 0], tokens[i, 1 : w + 1], tokens[i, w + 1] = SOT, rng.integers(2, 40000, size=w), EOT
    return tokens


def run(tokens, p, mode="mask", seed=3, epoch=0, keys=None):
    keys = np.arange(len(tokens)) if keys is None else keys
    return randomize_tokens(tokens, p, mode, word_positions(tokens, (SOT, EOT)), MASK, seed, epoch, keys)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_mask_rate_within_binomial_bounds(p):
    tokens = fake_tokens(400)
    words = word_positions(tokens, (SOT, EOT))
    out = run(tokens, p)
    n = int(words.sum())
    rate = float((out[words] == MASK).mean())
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n), (rate, n)
    assert np.all((out == tokens) | (out == MASK))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_p_zero_unchanged_and_input_untouched(mode):
    tokens = fake_tokens(20)
    before = tokens.copy()
    assert np.array_equal(run(tokens, 0.0, mode), tokens)
    run(tokens, 0.7, mode)
    assert np.array_equal(tokens, before)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_deterministic_per_seed_epoch_key(mode):
    tokens = fake_tokens(50)
    a = run(tokens, 0.4, mode, epoch=2)
    assert np.array_equal(a, run(tokens, 0.4, mode, epoch=2))
    assert not np.array_equal(a, run(tokens, 0.4, mode, epoch=3))
    assert not np.array_equal(a, run(tokens, 0.4, mode, epoch=2, seed=4))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_independent_of_row_order_and_batching(mode):
    tokens, keys = fake_tokens(40), np.arange(100, 140)
    full = run(tokens, 0.5, mode, keys=keys)
    perm = np.random.default_rng(1).permutation(40)
    assert np.array_equal(run(tokens[perm], 0.5, mode, keys=keys[perm]), full[perm])
    halves = [run(tokens[s], 0.5, mode, keys=keys[s]) for s in (slice(0, 17), slice(17, 40))]
    assert np.array_equal(np.concatenate(halves), full)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_non_maskable_positions_never_change(mode):
    tokens = fake_tokens(60)
    maskable = word_positions(tokens, (SOT, EOT))
    maskable[:, 1::3] = False  # also some word positions the caller protects
    out = randomize_tokens(tokens, 1.0, mode, maskable, MASK, 0, 0, np.arange(60))
    assert np.array_equal(out[~maskable], tokens[~maskable])
    assert (out[:, 0] == SOT).all() and (out == 0).sum() == (tokens == 0).sum()


def test_shuffle_keeps_multiset_and_full_shuffle_reorders():
    tokens = fake_tokens(30, L=40)
    words = word_positions(tokens, (SOT, EOT))
    for p in (0.3, 1.0):
        out = run(tokens, p, "shuffle")
        for i in range(len(tokens)):
            assert sorted(out[i]) == sorted(tokens[i])
    out = run(tokens, 1.0, "shuffle")
    long_rows = words.sum(1) >= 10
    assert long_rows.sum() > 10
    assert all(not np.array_equal(out[i], tokens[i]) for i in np.flatnonzero(long_rows))


def test_unknown_mode_and_bad_arguments():
    tokens = fake_tokens(3)
    with pytest.raises(ValueError, match="mask.*shuffle"):
        run(tokens, 0.0, "drop")
    with pytest.raises(ValueError, match="p must be"):
        run(tokens, 1.5)
    with pytest.raises(ValueError, match="expected tokens"):
        randomize_tokens(tokens, 0.1, "mask", word_positions(tokens, ()), MASK, 0, 0, np.arange(2))
