"""The VLM one-model test as published (docs/concepts/vlm-dejavu.md): the attacked model's text
tower and a pretrained text model search the same public captions.

With ``measure.text_model`` (a sentence-transformers model folder, ``SentenceTransformer.save``'s
output, or a Hugging Face transformers encoder folder, ``save_pretrained``'s output, which
sentence-transformers loads with mean pooling over the tokens; local or at any fsspec URI, copied
once per machine; nothing is downloaded), each attacked caption retrieves its
k nearest public captions twice: by the target's text tower (model A on the records it trained
on, model B on its own when the pair exists), and by the text model, which saw none of the splits,
as the reference. Both searches run in space ``caption_to_caption`` on the same sharded FAISS
actors as the others, and the objects of the retrieved captions' images are scored as everywhere
else. The embed stage adds two passes that read no image: the pair's text towers over the public
captions (their attacked captions are embedded already), then the text model over the public and
the attacked captions (unit-normalised, as the published code asks of it). Sides and controls are
the text retriever's (``text_retriever.CONTROLS``) with the text model in the reference's place.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Mapping

import numpy as np

from study.config import StudyConfig
from study.data.model_input import ModelInput
from study.errors import ConfigError, DataError
from study.frame.context import RunContext
from study import model_cache
from study.stages.measure import ONE_MODEL_CONTROLS

TEXT_MODEL = "text_model"  # the model name in embed/ and search/
SPACE = "caption_to_caption"  # attacked captions -> public captions
TEXT = "text"
KEY = "measure.text_model"
CONTROLS = {control: [(side, split, target, TEXT_MODEL) for side, split, target, _ in rows]
            for control, rows in ONE_MODEL_CONTROLS.items()}


def targets(cfg: StudyConfig) -> tuple[str, ...]:
    return ("model_a", "model_b") if cfg.train.pair else ("model_a",)


def reads(cfg: StudyConfig) -> tuple:
    """What the embed and measure stages read of the text model (``StudyKind.extra_reads``): its
    location and its files' sha256 (``model_cache.fingerprint``, computed once per listing), so
    that new weights count as a change; nothing when the test is off (the runs without it keep
    their ids)."""
    from study import model_cache, storage

    uri = cfg.measure.text_model
    if not uri:
        return ()
    return (uri, model_cache.fingerprint(uri, KEY) if storage.exists(uri) else None)


def model_form(folder: str) -> str:
    """How the folder is read: a sentence-transformers model, or a transformers encoder that
    sentence-transformers mean-pools."""
    return "sentence-transformers" if os.path.isfile(os.path.join(folder, "modules.json")) else \
        "transformers encoder, mean pooling"


def searches(cfg: StudyConfig) -> dict[tuple[str, str], tuple[str, str]]:
    """The test's searches when it is on: each target's and the text model's, captions -> public captions."""
    if not cfg.measure.text_model:
        return {}
    return {(m, SPACE): (TEXT, TEXT) for m in (*targets(cfg), TEXT_MODEL)}


class SentenceEmbedder:
    """Sentence-transformers models, loaded once per replica: every row is a caption, embedded
    unit-normalised (``<model>/text``)."""

    def __init__(self, model_uris: Mapping[str, str], threads: int | None):
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # a hub lookup would hang without a network
            os.environ.setdefault(name, "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(f"{KEY}: needs the sentence-transformers package (pip install sentence-transformers)") from None
        import torch  # here, not at the top: the measure stage's driver and tasks import this module too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bars would fill a replica's console
        if threads is not None:  # a replica's share of its node; None: the caller's process as it is
            torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models, self.forms = {}, {}
        for name, uri in model_uris.items():
            folder = model_cache.local_path(uri, KEY)  # a remote folder: copied once per machine
            try:
                if not os.path.isdir(folder):
                    raise ValueError("not a folder")
                self.models[name] = SentenceTransformer(folder, device=device, local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise DataError(f"{KEY}: {uri} does not load as a sentence-transformers model or a transformers "
                                f"encoder ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            self.forms[name] = model_form(folder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"id": batch["id"], "set": batch["set"]}
        texts = [str(c) for c in batch["caption"]]
        for name, model in self.models.items():
            out[f"{name}/{TEXT}"] = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                                 show_progress_bar=False).astype(np.float32)
        return out


def embed_captions(ctx: RunContext, public_captions: dict, plan: dict, attacked: tuple[str, ...]) -> None:
    """The test's two embed passes (the module's docstring); ``public_captions`` is the public
    captions' plan, ``plan`` the pair's (the attacked captions)."""
    from study.embed.captions import CAPTION, PUBLIC, ClipEmbedder, prepare_vlm_batch
    from study.stages.embed import embed_planned

    cfg, split_plan = ctx.cfg, ctx.split_plan()
    check = SentenceEmbedder({TEXT_MODEL: cfg.measure.text_model}, None)  # a folder that does not load stops here
    ctx.log("embed", f"{TEXT_MODEL}: {cfg.measure.text_model} ({check.forms[TEXT_MODEL]})")
    columns = list(dict.fromkeys(["id", "caption", "objects", *split_plan.columns()]))  # no image bytes read
    inputs = ModelInput.of(cfg.data)
    public_only = {PUBLIC: CAPTION}
    embed_planned(ctx, {m: PUBLIC for m in targets(cfg)}, public_captions["embedded"], {}, "captions (text towers)",
                  columns, partial(prepare_vlm_batch, plan=split_plan, modes=public_only, inputs=inputs), ClipEmbedder,
                  {PUBLIC: (TEXT,)}, only_views=True)
    modes = {PUBLIC: CAPTION, **{s: TEXT for s in attacked}}
    embed_planned(ctx, {TEXT_MODEL: PUBLIC}, public_captions["embedded"], plan, f"captions ({TEXT_MODEL})", columns,
                  partial(prepare_vlm_batch, plan=split_plan, modes=modes, inputs=inputs), SentenceEmbedder,
                  {s: (TEXT,) for s in modes}, model_uris={TEXT_MODEL: cfg.measure.text_model})
