"""Open-vocabulary detectors through Hugging Face transformers (OWL-ViT, OWLv2, Grounding DINO), each
a model of a few layers with random weights built from its library's config and saved as users have
it (``save_pretrained``: config, weights, tokenizer and image processor in a folder). What the
annotator keeps equals the model run directly with everything after its forward pass worked out
by hand: sigmoid scores, each proposal's best query (for Grounding DINO: the queries as phrases of
a text in chunks of its text length, a query's score its best token's), its box from centre and
size in the image's pixels (OWL-ViT's resize to a square; OWLv2's padding to one), then the
thresholds."""
from __future__ import annotations

import gzip
import json
import os

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image
from test_annotators import WORDS, greedy_nms

from study.annotate.annotators import ANNOTATORS
from study.annotate.detections import Thresholds
from study.annotate.vocabulary import parse
from study.data.photos import photo
from study.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
TEMPLATES = ("a photo of a {}.", "a {} in the scene")


def clip_tokenizer(folder):
    """CLIP's byte-pair tokenizer as Hugging Face files, from the vocabulary open_clip ships (the
    same merges and ids as open_clip's own tokenizer): nothing is downloaded."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in lines]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!")


def bert_tokenizer(folder):
    """A word-piece tokenizer over a few words and every letter (Grounding DINO's text side)."""
    from transformers import BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = "a photo of the in scene bike bicycle rucksack backpack bottle scissors unicorn".split()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", *words, *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    return BertTokenizerFast(str(folder / "vocab.txt"))


def small_grounding_dino(folder):
    import transformers as tf

    torch.manual_seed(1)
    tokenizer = bert_tokenizer(folder)
    config = tf.GroundingDinoConfig(
        backbone_config=tf.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                      out_indices=[2, 3, 4]),
        text_config=tf.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30, max_text_len=24,
        disable_custom_kernels=True)
    net = tf.GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():  # smaller decoder outputs: scores spread below 1 instead of saturating
        net.model.decoder.layer_norm.weight.mul_(0.05)
    images = tf.GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    tf.GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder / "grounding-dino")
    net.save_pretrained(folder / "grounding-dino")
    return net, str(folder / "grounding-dino")


def small_model(kind: str, folder):
    import transformers as tf

    if kind == "grounding-dino":
        return small_grounding_dino(folder)
    torch.manual_seed(1)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=96, patch_size=16)
    config, model, processor, images = {"owlvit": (tf.OwlViTConfig, tf.OwlViTForObjectDetection, tf.OwlViTProcessor,
                                                   tf.OwlViTImageProcessor),
                                        "owlv2": (tf.Owlv2Config, tf.Owlv2ForObjectDetection, tf.Owlv2Processor,
                                                  tf.Owlv2ImageProcessor)}[kind]
    net = model(config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():  # random heads that score proposals around 0.5 and keep boxes near their patch
        for layer in (net.class_head.logit_shift, net.class_head.logit_scale, net.box_head.dense2):
            layer.weight.normal_(0, 0.02)
            layer.bias.zero_()
    size = {"height": 96, "width": 96}
    extra = {"crop_size": size} if kind == "owlvit" else {}
    processor(image_processor=images(size=size, **extra), tokenizer=clip_tokenizer(folder)).save_pretrained(folder / kind)
    net.save_pretrained(folder / kind)
    return net, str(folder / kind)


@pytest.fixture(scope="module", params=["owlvit", "owlv2", "grounding-dino"])
def saved(request, tmp_path_factory):
    return request.param, *small_model(request.param, tmp_path_factory.mktemp(request.param))


def _images():
    sizes = [(200, 130), (96, 160), (150, 150)]
    return [Image.fromarray(photo(i)).convert("RGB").resize(s) for i, s in enumerate(sizes)]


def _proposals(kind, model, folder, images, queries):
    """Per image, per proposal: (sigmoid score per query, box cx, cy, w, h relative, its scale)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    texts = [q for q, _ in queries]
    if kind != "grounding-dino":
        inputs = processor(text=[texts] * len(images), images=images, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            out = model(**inputs)
        for logits, boxes, im in zip(out.logits.numpy(), out.pred_boxes.numpy(), images):
            w, h = im.size
            scale = (w, h) if kind == "owlvit" else (max(w, h), max(w, h))  # OWLv2 pads to a square
            yield [(1 / (1 + np.exp(-logits[p].astype(np.float64))), boxes[p], scale) for p in range(len(logits))]
        return
    # Grounding DINO: the queries as one text "q1 . q2 . ...", chunked to its 24 tokens here; a
    # query's score is its best token's.
    phrases = [t.rstrip(".").strip() for t in texts]
    chunks, current = [], []
    for q, phrase in enumerate(phrases):
        n = len(processor.tokenizer(" . ".join([phrases[i] for i in current] + [phrase]) + " .")["input_ids"])
        if current and n > model.config.max_text_len:
            chunks.append(current)
            current = []
        current.append(q)
    chunks.append(current)
    found = [[] for _ in images]
    for chunk in chunks:
        text = " . ".join(phrases[q] for q in chunk) + " ."
        ids = processor.tokenizer(text)["input_ids"]
        spans, at = {}, 1  # token positions of each query: after [CLS], each phrase then its "."
        for q in chunk:
            n = len(processor.tokenizer(phrases[q], add_special_tokens=False)["input_ids"])
            spans[q] = list(range(at, at + n))
            at += n + 1
        assert at + 1 == len(ids)  # [SEP] last
        inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inputs)
        for i, im in enumerate(images):
            for p in range(out.logits.shape[1]):
                probs = torch.sigmoid(out.logits[i, p]).numpy()  # in float32, as the model's own post-processing
                scores = np.full(len(queries), -1.0)
                for q in chunk:
                    scores[q] = probs[spans[q]].max()
                found[i].append((scores, out.pred_boxes[i, p].numpy(), im.size))
    yield from found


def _by_hand(kind, model, folder, images, vocabulary, th: Thresholds):
    queries = [(t.format(q), o) for t in TEMPLATES for q, o in vocabulary.queries()]
    kept_all = []
    for im, proposals in zip(images, _proposals(kind, model, folder, images, queries)):
        w, h = im.size
        found = []
        for probs, (cx, cy, bw, bh), (sx, sy) in proposals:
            best = int(np.argmax(probs))
            box = [min(max(v, 0.0), lim) for v, lim in zip(((cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx,
                                                            (cy + bh / 2) * sy), (w, h, w, h))]
            if probs[best] >= th.score:
                found.append((float(probs[best]), queries[best][1], box))
        kept_all.append(greedy_nms(found, th))
    return kept_all


def test_a_transformers_detector_keeps_what_the_model_and_the_thresholds_give(saved):
    kind, model, folder = saved
    vocabulary, images = parse(WORDS, "test"), _images()
    loose = Thresholds(score=0.0, nms_iou=0.3, max_per_image=20)
    kept_scores = [k[0] for w in _by_hand(kind, model, folder, images, vocabulary, loose) for k in w]
    # and at the median kept score: some kept, some not
    for th in (loose, Thresholds(score=float(np.median(kept_scores)), nms_iou=0.3)):
        annotator = ANNOTATORS["transformers"](folder, vocabulary, th, TEMPLATES)
        got, want = annotator(images), _by_hand(kind, model, folder, images, vocabulary, th)
        assert sum(len(w) for w in want) >= 3 and len({k[1] for w in want for k in w}) >= 2
        for det, kept in zip(got, want):
            assert det.objects.tolist() == [k[1] for k in kept]
            np.testing.assert_allclose(det.scores, [k[0] for k in kept], rtol=1e-5)
            np.testing.assert_allclose(det.boxes, np.array([k[2] for k in kept]).reshape(-1, 4), atol=1e-3)


def test_a_model_folder_on_an_object_store_loads_the_same(saved):
    kind, _, folder = saved
    fs = fsspec.filesystem("memory")
    for root, _, names in os.walk(folder):
        for name in names:
            fs.pipe(f"/models/{kind}/{os.path.relpath(os.path.join(root, name), folder)}",
                    open(os.path.join(root, name), "rb").read())
    vocabulary, th = parse(WORDS, "test"), Thresholds(score=0.0)
    here = ANNOTATORS["transformers"](folder, vocabulary, th, TEMPLATES)
    there = ANNOTATORS["transformers"](f"memory://models/{kind}", vocabulary, th, TEMPLATES)
    assert there.fingerprint == here.fingerprint
    assert [d.objects.tolist() for d in there(_images())] == [d.objects.tolist() for d in here(_images())]


def test_a_folder_of_another_model_or_no_folder_is_one_clear_error(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path / "bert")
    vocabulary = parse(WORDS, "test")
    with pytest.raises(ConfigError, match="holds a 'bert' model; the transformers annotator runs owlvit, owlv2, grounding-dino"):
        ANNOTATORS["transformers"](str(tmp_path / "bert"), vocabulary, Thresholds())
    with pytest.raises(ConfigError, match="is not a folder of a Hugging Face model"):
        ANNOTATORS["transformers"](str(tmp_path / "missing"), vocabulary, Thresholds())
