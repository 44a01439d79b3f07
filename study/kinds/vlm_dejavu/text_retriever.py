"""The VLM one-model test (docs/concepts/vlm-dejavu.md): a text-only retriever stands in for the reference model.

The retriever is a CLIP-style model that the train stage fits on the public split only
(``train.text_retriever``; ``train/text_retriever/``, the pair's recipe); only its text tower is
used. The embed stage passes the public records' captions and the attacked records' captions
through it (a second Ray Data pass that reads no image), the search stage finds each attacked
caption's k nearest public captions (space ``caption_to_caption``, on the same sharded FAISS
actors as the models' searches), and the measure stage scores the objects of the retrieved
captions' images exactly as it scores the objects of the attacked model's retrieved images
(``outcomes.score_table``): union or top-n, all or unnamed objects, every k.

Sides are the SSL one-model test's (``study.stages.measure.ONE_MODEL_CONTROLS``) with the retriever in the
reference's place: positive = model A on its own training records and, when the pair exists,
model B on its own (each model is the target on the records it trained on, as in the two-model
test, and the retriever, which saw neither split, is the reference on both); null = the holdout
halves. PPG, PRG and AUCG come from the same population test with the same intervals and p-values.
"""
from __future__ import annotations

from study.config import StudyConfig
from study.frame.context import RunContext
from study.stages.measure import ONE_MODEL_CONTROLS, write_one_model
from study.data.model_input import ModelInput

RETRIEVER = "text_retriever"  # the train stage's model dir, and the model name in embed/ and search/
SPACE = "caption_to_caption"  # attacked captions -> public captions, both by the retriever's text tower
TEXT = "text"
CONTROLS = {control: [(side, split, target, RETRIEVER) for side, split, target, _ in rows]
            for control, rows in ONE_MODEL_CONTROLS.items()}


def searches(cfg: StudyConfig) -> dict[tuple[str, str], tuple[str, str]]:
    """The retriever's search, when it is on: attacked captions -> public captions."""
    return {(RETRIEVER, SPACE): (TEXT, TEXT)} if cfg.train.text_retriever else {}


def embed_captions(ctx: RunContext, public_captions: dict, plan: dict, attacked: tuple[str, ...]) -> dict:
    """The retriever's embed pass: every public record with a caption (``public_captions``, the
    planned count and skips) and every testable attacked caption (``plan``, the pair's plan)
    through its text tower; returns the public captions' plan for the stage summary."""
    from functools import partial

    from study.embed.captions import CAPTION, PUBLIC, ClipEmbedder, prepare_vlm_batch
    from study.stages.embed import embed_planned

    split_plan = ctx.split_plan()
    ctx.log("embed", f"{RETRIEVER}: {public_captions['embedded']} public captions, skipped: "
                     + (", ".join(f"{n} {r}" for r, n in public_captions["skipped"].items()) or "none"))
    modes = {PUBLIC: CAPTION, **{s: TEXT for s in attacked}}
    prepare = partial(prepare_vlm_batch, plan=split_plan, modes=modes, inputs=ModelInput.of(ctx.cfg.data))
    columns = list(dict.fromkeys(["id", "caption", "objects", *split_plan.columns()]))  # no image bytes read
    embed_planned(ctx, {RETRIEVER: PUBLIC}, public_captions["embedded"], plan, f"captions ({RETRIEVER})", columns,
                  prepare, ClipEmbedder, {s: (TEXT,) for s in modes})
    return public_captions


def write_results(ctx: RunContext, predictors: dict, public_captions: dict | None) -> None:
    """``measure/one_model.json``: each one-model reference's results per space and control (the
    text retriever's, the text model's), with what their caption database held; a note when both
    are off (so a rerun without them leaves no stale test)."""
    if not predictors:
        write_one_model(ctx, {"note": "no one-model test: train.text_retriever and measure.text_model are off"})
        return
    # What each reference saw: the retriever trained on the public split; the text model elsewhere.
    trained_on = {p: ["public"] if p == RETRIEVER else ["elsewhere"] for p in predictors}
    write_one_model(ctx, {"reference": RETRIEVER if RETRIEVER in predictors else next(iter(predictors)), "space": SPACE,
                          "trained_on": trained_on, "public_captions": public_captions or {}, "predictors": predictors})


def train_job(ctx: RunContext, manifest: dict, digest: str, summary: dict):
    """``StudyKind.train_beside``: the text retriever (``train.text_retriever``), a CLIP-style
    model of the pair's recipe on the public split alone (never the shared split: it must not see
    what the attacked models saw), as (job, training records left out); None when it is off or
    reused (its summary then taken)."""
    from study.stages.train import new_job, reused

    if not ctx.cfg.train.text_retriever or reused(ctx, RETRIEVER, digest, summary):
        return None
    return new_job(ctx, "clip", RETRIEVER, ("public",), manifest, digest)
