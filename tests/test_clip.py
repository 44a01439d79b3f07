"""The CLIP-style models in plain PyTorch (open_clip, from scratch): tokenizer, mask token,
save/load, a short training run that learns, and zero-shot classification above chance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from study.config import DataConfig, TrainConfig
from study.core.text_random import randomize_tokens
from study.data import records
from study.data.synthetic import PROMPT, class_name, make_record
from study.errors import ConfigError
from study.train import clip, loop


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return clip.build_clip("dejavu-tiny", 32)


def test_tokens_mask_and_maskable_positions(tiny):
    _, tok = tiny
    tokens = clip.tokenize(tok, ["the digit three on a grey background", ""])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.int64
    maskable = clip.maskable_positions(tokens, tok)
    n_words = len(tok.encode("the digit three on a grey background"))
    assert int(maskable[0].sum()) == n_words and int(maskable[1].sum()) == 0
    assert tokens[0, 0] == tok.sot_token_id and tokens[0, n_words + 1] == tok.eot_token_id
    mask = clip.mask_token_id(tok)
    assert mask < tok.eot_token_id  # the text tower pools at the largest id: end-of-text must stay it
    masked = randomize_tokens(tokens.numpy(), 1.0, "mask", maskable.numpy(), mask, seed=0, epoch=0,
                              keys=np.arange(2))
    assert (masked[0][maskable[0].numpy()] == mask).all()
    assert (masked[0].argmax() == tokens[0].argmax())  # pooling position unchanged


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown open_clip model 'dejavu-tiniest'.*dejavu-tiny"):
        clip.check_model_name("dejavu-tiniest")
    clip.check_model_name("ViT-B-32")  # standard names stay selectable


def test_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="init_temperature"):
        clip.clip_params({"init_temperature": 0})
    with pytest.raises(ConfigError, match="train.params"):
        clip.clip_params({"temperature": 0.1})


def test_save_load_round_trip(tiny):
    model, tok = tiny
    meta = {"clip": "dejavu-tiny", "image_size": 32, "method": "clip"}
    loaded, tok2, meta2 = clip.load_clip(clip.save_clip(model, meta))
    assert meta2 == meta
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    tokens = clip.tokenize(tok, ["a", "b c", "the digit one", "grey"])
    torch.testing.assert_close(clip.encode_images(loaded, images), clip.encode_images(model, images))
    torch.testing.assert_close(clip.encode_texts(loaded, clip.tokenize(tok2, ["a", "b c", "the digit one", "grey"])),
                               clip.encode_texts(model, tokens))
    emb = clip.encode_images(model, images)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))


def test_retrieval_recall_against_naive_ranking(tiny):
    model, tok = tiny
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    tokens = clip.tokenize(tok, [f"the digit {class_name(i % 10)} number {i}" for i in range(12)])
    got = clip.retrieval_recall(model, images, tokens, ks=(1, 5))
    sims = (clip.encode_images(model, images) @ clip.encode_texts(model, tokens).T).numpy()
    ranks = [int(np.sum(sims[i] > sims[i, i])) for i in range(12)]
    assert got == {1: pytest.approx(np.mean([r < 1 for r in ranks])), 5: pytest.approx(np.mean([r < 5 for r in ranks]))}


def test_training_learns_and_zero_shot_beats_chance():
    """Single-object scenes on grey backgrounds: a few epochs teach the tiny model digit words."""
    torch.manual_seed(0)
    cfg = DataConfig(num_images=700, num_classes=5, object_scale=(0.4, 0.5), background="texture_gray")
    recs = [make_record(i, cfg) for i in range(700)]
    images = torch.from_numpy(np.stack([records.decode_image(r["image"]) for r in recs]).transpose(0, 3, 1, 2).copy())
    labels = torch.tensor([r["label"] for r in recs])
    model, tok = clip.build_clip("dejavu-tiny", 32)
    tokens = clip.tokenize(tok, [r["caption"] for r in recs])
    train = slice(0, 500)
    tc = TrainConfig(method="clip", epochs=12, lr=2e-3, weight_decay=0.1, global_batch_size=100, warmup_epochs=1)
    opt = loop.make_optimizer(model, tc)
    sched = loop.make_scheduler(opt, tc, loop.steps_per_epoch(500, 100))
    loss_fn, gen = clip.make_loss(0, 1), torch.Generator().manual_seed(0)
    losses = [clip.clip_epoch(model, loss_fn, loop.memory_batches(100, gen, images[train], tokens[train]), opt, sched)["loss"]
              for _ in range(tc.epochs)]
    assert losses[-1] < 0.5 * losses[0]
    held = slice(500, 700)
    acc = clip.zero_shot_accuracy(model, tok, images[held], labels[held], [class_name(c) for c in range(5)], PROMPT)
    # Chance is 1/5; 200 held-out images put chance + 0.15 beyond four binomial standard deviations.
    assert acc > 0.2 + 0.15, acc


def test_zero_shot_with_several_right_classes_matches_a_naive_loop(tiny):
    model, tok = tiny
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen)
    names = [class_name(c) for c in range(6)]
    truth = torch.rand(16, 6, generator=gen) < 0.4
    got = clip.zero_shot_accuracy(model, tok, images, truth, names, PROMPT)
    sims = clip.encode_images(model, images) @ clip.encode_texts(model, clip.tokenize(tok, [PROMPT.format(n) for n in names])).T
    assert got == pytest.approx(np.mean([bool(truth[i, int(sims[i].argmax())]) for i in range(16)]))
