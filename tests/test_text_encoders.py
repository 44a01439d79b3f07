"""Pretrained text references for the one-model VLM test, read as users have them: a plain Hugging
Face transformers encoder folder (``save_pretrained``: no sentence-transformers files) embeds each
caption as the mean of its token states over the attention mask, unit-normalised, computed here
by hand with transformers; a folder on an object store is copied once into the machine's cache and
embeds the same."""
from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest
import torch

from study.kinds.vlm_dejavu.text_model import TEXT, TEXT_MODEL, SentenceEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
CAPTIONS = ["a dog next to a red ball", "two cats", "a bicycle leaning on a wall by the sea"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEJAVU_CACHE", str(tmp_path / "cache"))


def encoder_folder(folder, layers: int = 2, seed: int = 3) -> str:
    """A BERT of a few layers with random weights and a character tokenizer (any caption
    tokenizes), saved with save_pretrained."""
    import string

    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(folder)
    chars = list(string.ascii_lowercase + string.digits)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    with open(os.path.join(folder, "vocab.txt"), "w") as fh:
        fh.write("\n".join(words))
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=os.path.join(folder, "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return str(folder)


def _mean_pooled(folder: str) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(CAPTIONS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (states * mask).sum(1) / mask.sum(1)
    return (mean / mean.norm(dim=1, keepdim=True)).numpy()


def _embed(uri: str):
    embedder = SentenceEmbedder({TEXT_MODEL: uri}, None)
    batch = {"id": np.arange(len(CAPTIONS)), "set": np.array(["public"] * len(CAPTIONS)),
             "caption": np.array(CAPTIONS, dtype=object)}
    return embedder(batch)[f"{TEXT_MODEL}/{TEXT}"], embedder.forms[TEXT_MODEL]


def test_a_transformers_encoder_folder_is_mean_pooled(tmp_path):
    folder = encoder_folder(tmp_path / "bert")
    got, form = _embed(folder)
    assert form == "transformers encoder, mean pooling"
    np.testing.assert_allclose(got, _mean_pooled(folder), atol=1e-5)
    fs = fsspec.filesystem("memory")
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as fh:
            fs.pipe(f"/models/bert/{name}", fh.read())
    remote, _ = _embed("memory://models/bert")
    np.testing.assert_allclose(remote, got, atol=1e-6)
    copies = os.listdir(tmp_path / "cache" / "models")
    _embed("memory://models/bert")
    assert os.listdir(tmp_path / "cache" / "models") == copies and len(copies) == 1  # copied once
