"""Config loading: YAML + ``--set`` overrides into checked, frozen dataclasses (study.config_load)."""
from __future__ import annotations

import dataclasses
import os

import pytest
import yaml

from study.config import StudyConfig
from study.config_load import config_hash, config_to_dict, load_config
from study.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_load():
    cfg = load_config(None)
    assert cfg == StudyConfig()
    assert cfg.train.epochs == StudyConfig().train.epochs
    assert cfg.splits.fractions["public"] > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_yaml_and_overrides_with_types(tmp_path):
    path = write(
        tmp_path,
        "name: mine\ntrain:\n  epochs: 3\n  lr: 0.01\n  augment:\n    flip: false\nsearch:\n  k: 7\n",
    )
    cfg = load_config(
        path,
        [
            "train.epochs=7",
            "data.objects_per_image=[2, 3]",
            "model.projector_dims=[64, 32, 16]",
            "train.augment.scale=[0.1, 1]",
            "train.params={temperature: 0.2}",
            "ray.num_cpus=4",
            "embed.crop.rule=corner",
            "measure.quantiles=[0.1, 1]",
        ],
        output="/tmp/out-root",
    )
    assert cfg.name == "mine"
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.01
    assert cfg.train.augment.flip is False
    assert cfg.train.augment.scale == (0.1, 1.0) and isinstance(cfg.train.augment.scale[1], float)
    assert cfg.search.k == 7
    assert cfg.data.objects_per_image == (2, 3)
    assert cfg.model.projector_dims == (64, 32, 16)
    assert cfg.train.params == {"temperature": 0.2}
    assert cfg.ray.num_cpus == 4
    assert cfg.embed.crop.rule == "corner"
    assert cfg.measure.quantiles == (0.1, 1.0)
    assert cfg.output == "/tmp/out-root"
    # Untouched values keep their defaults.
    assert cfg.train.global_batch_size == StudyConfig().train.global_batch_size


def test_fractions_mapping_override_as_documented():
    cfg = load_config(None, ["splits.fractions={target: 0.2, reference: 0.2, public: 0.6}"])
    assert cfg.splits.fractions["target"] == 0.2
    assert cfg.splits.fractions["public"] == 0.6
    assert cfg.splits.fractions["holdout"] == 0.0


def test_null_for_optional_values():
    cfg = load_config(None, ["ray.num_cpus=null", "ray.address=auto"])
    assert cfg.ray.num_cpus is None and cfg.ray.address == "auto"


@pytest.mark.parametrize(
    "override,key,suggestion",
    [
        ("train.epocs=3", "train.epocs", "train.epochs"),
        ("serch.k=3", "serch", "search"),
        ("train.augment.flipp=true", "train.augment.flipp", "train.augment.flip"),
    ],
)
def test_unknown_key_names_it_and_suggests(override, key, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert f"'{key}'" in msg
    assert "did you mean" in msg and suggestion in msg


def test_unknown_key_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.num_imagez.*did you mean 'data\.num_images'"):
        load_config(write(tmp_path, "data:\n  num_imagez: 50\n"))


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.lr=fast", "train.lr"),
        ("train.augment.flip=1", "train.augment.flip"),
        ("search.k=[1, 2]", "search.k"),
        ("data.objects_per_image=[1, 2, 3]", "data.objects_per_image"),
        ("data.objects_per_image=[1, x]", "data.objects_per_image[1]"),
        ("train=5", "train"),
        ("name=3", "name"),
        ("model.projector_dims=8192x8192", "model.projector_dims"),
        ("model.projector_dims=64-0", "model.projector_dims"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    assert_error_names_key(override, key)


@pytest.mark.parametrize(
    "override,key",
    [
        ("splits.fractions={target: 0.5, reference: 0.5, public: 0.5}", "splits.fractions"),
        ("splits.fractions={target: 0.5, public: 0.5}", "splits.fractions.reference"),
        ("splits.fractions={target: 0.3, reference: 0.3, public: 0.3, test: 0.1}", "splits.fractions"),
        ("search.metric=cosine", "search.metric"),
        ("train.epochs=0", "train.epochs"),
        ("data.object_scale=[0.5, 0.2]", "data.object_scale"),
        ("data.correlation=1.5", "data.correlation"),
        ("train.augment.scale=[0, 1]", "train.augment.scale"),
        ("embed.crop.min_side=0", "embed.crop.min_side"),
        ("name=a/b", "name"),
        ("train.precision=fp8", "train.precision"),
        ("train.augment.pipeline=kornia", "train.augment.pipeline"),
        ("train.augment.blur_prob=[1.0, 1.5]", "train.augment.blur_prob"),
        ("train.snapshot=3", "train.snapshot"),
        ("measure.sample_rankings=[closest]", "measure.sample_rankings"),
        ("measure.sample_rankings=[]", "measure.sample_rankings"),
        ("measure.sample_sides=reference", "measure.sample_sides"),
        ("measure.sample_f=mean", "measure.sample_f"),
        ("measure.top_q_size=round", "measure.top_q_size"),
        ("data.resize=imagenet", "data.resize"),
    ],
)
def test_bad_value_names_the_key(override, key):
    assert_error_names_key(override, key)


def assert_error_names_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(key + ":")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train:\n  epochs: [1, 2\n"))


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == StudyConfig()


def test_config_hash_stable_and_sensitive():
    a = load_config(None, ["train.epochs=7"])
    b = load_config(None, ["train.epochs=7"])
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16
    assert config_hash(a) != config_hash(load_config(None, ["train.epochs=8"]))
    assert config_hash(a.train) != config_hash(a.search)
    assert config_hash(a, "upstream-1") != config_hash(a, "upstream-2")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(
        None,
        ["train.epochs=7", "data.objects_per_image=[1, 3]", "train.params={beta: 2}", "ray.num_cpus=2"],
        output="somewhere",
    )
    data = config_to_dict(cfg)
    text = yaml.safe_dump(data)
    assert "!!python" not in text  # plain data only
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_exponent_notation_floats_are_numbers(tmp_path):
    assert load_config(None, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert load_config(write(tmp_path, "train:\n  weight_decay: 5e-4\n")).train.weight_decay == pytest.approx(5e-4)
    assert load_config(None, ["measure.quantiles=[5e-2, 1.0]"]).measure.quantiles == (0.05, 1.0)


def test_one_entry_of_a_mapping_can_be_overridden(tmp_path):
    cfg = load_config(None, ["splits.fractions.target=0.1", "splits.fractions.reference=0.1"])
    defaults = load_config(None).splits.fractions
    assert cfg.splits.fractions["target"] == 0.1 and cfg.splits.fractions["reference"] == 0.1
    assert cfg.splits.fractions["public"] == defaults["public"]
    # a mapping given in the file is the starting point instead of the defaults
    path = write(tmp_path, "splits:\n  fractions: {target: 0.3, reference: 0.3, public: 0.4}\n")
    cfg = load_config(path, ["splits.fractions.public=0.3"])
    assert cfg.splits.fractions["holdout"] == 0.0 and cfg.splits.fractions["public"] == 0.3


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("data.path=[oops", "data.path", "[oops"),
        ("splits.fractions={target: 0.2", "splits.fractions", "{target: 0.2"),
        ("name=a: b: c", "name", "a: b: c"),
        ("data.path=@home", "data.path", "@home"),
    ],
)
def test_override_that_is_not_yaml_names_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert msg.startswith(key + ":") and repr(value) in msg and "not valid YAML" in msg
    assert "\n" not in msg


def test_plain_strings_and_paths_still_pass_as_overrides():
    cfg = load_config(None, ["data.source=webdataset", "data.path=s3://b/x", "data.objects=/tmp/a b"])
    assert (cfg.data.source, cfg.data.path, cfg.data.objects) == ("webdataset", "s3://b/x", "/tmp/a b")
    assert load_config(None, ["data.source=parquet", "data.path=/tmp/x"]).data.source == "parquet"
    assert load_config(None, ['data.path="[quoted"']).data.path == "[quoted"


def test_projector_sizes_as_the_papers_write_them():
    assert load_config(None, ["model.projector_dims=8192-8192-8192"]).model.projector_dims == (8192, 8192, 8192)
    assert load_config(None, ["model.projector_dims=[64, 32]"]).model.projector_dims == (64, 32)


def test_dino_takes_at_most_hidden_bottleneck_and_output_sizes():
    from study.frame.kinds import get_kind

    cfg = load_config(None, ["train.method=dino", "model.projector_dims=64-32-16-8"])
    with pytest.raises(ConfigError, match=r"^model\.projector_dims: dino takes at most 3 sizes"):
        get_kind(cfg.study).check(cfg)
    for sizes in ("64-16-128", "64-32"):
        get_kind(cfg.study).check(load_config(None, ["train.method=dino", f"model.projector_dims={sizes}"]))
    with pytest.raises(ConfigError, match=r"^train\.precision: fp16 needs a GPU"):
        get_kind(cfg.study).check(load_config(None, ["train.precision=fp16"]))


def test_every_shipped_study_config_loads_and_passes_its_kinds_checks():
    import glob

    from study.frame.kinds import get_kind

    paths = [p for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))) if "cluster" not in os.path.basename(p)]
    assert len(paths) >= 6
    for path in paths:
        cfg = load_config(path)
        get_kind(cfg.study).check(cfg)


COCO = ["data.source=coco", "data.path=/data/images", "data.coco.instances=/data/instances.json"]
ANNOTATOR = ["annotate.annotator=torchvision", "annotate.weights=/models/detector.pt"]


@pytest.mark.parametrize("study, source, tagger", [
    ("ssl_dejavu", ["data.source=synthetic"], "synthetic_background"),  # the generator's captions name the background
    ("ssl_dejavu", COCO, ""),  # a COCO caption names the foreground: the one-model tagger is off
    ("ssl_dejavu", ["data.source=img2dataset", "data.path=/data/shards"], ""),
    ("vlm_dejavu", COCO, "synthetic_background"),  # a kind that never reads it keeps its old value
    # An annotator that tags the crops: their tags, on any source.
    ("ssl_dejavu", [*COCO, *ANNOTATOR, "annotate.crop_tags=true"], "crop_tags"),
    ("ssl_dejavu", [*COCO, *ANNOTATOR], ""),
])
def test_the_one_model_tagger_defaults_by_source(study, source, tagger):
    cfg = load_config(None, [f"study={study}", *source])
    assert cfg.measure.one_model_tagger == tagger
    assert config_to_dict(cfg)["measure"]["one_model_tagger"] == tagger  # the saved config holds the resolved value


def test_an_explicit_tagger_is_kept_and_auto_hashes_as_it_resolves():
    explicit = load_config(None, [*COCO, "measure.one_model_tagger=synthetic_background"])
    assert explicit.measure.one_model_tagger == "synthetic_background"
    assert load_config(None, ["measure.one_model_tagger="]).measure.one_model_tagger == ""
    # A synthetic study's runs keep their ids: "auto" resolves before anything is hashed.
    auto = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), [])
    named = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), ["measure.one_model_tagger=synthetic_background"])
    assert config_hash(auto.measure) == config_hash(named.measure)
    assert dataclasses.replace(auto, name="again").measure == auto.measure


def test_crop_tags_need_an_annotator_that_makes_them():
    from study.frame.kinds import get_kind

    with pytest.raises(ConfigError, match="crop_tags are what an annotator finds in the crops; set annotate.annotator "
                                          "and annotate.crop_tags: true"):
        get_kind("ssl_dejavu").check(load_config(None, [*COCO, "measure.one_model_tagger=crop_tags"]))
    with pytest.raises(ConfigError, match="annotate.weights: is required with an annotator"):
        load_config(None, ["annotate.annotator=torchvision"])


def test_the_report_says_why_there_is_no_one_model_test():
    from study.kinds.ssl_dejavu.measure import no_predictor_note

    off = no_predictor_note(load_config(None, COCO))
    assert "measure.one_model_tagger is off" in off and "data.source=coco" in off and "foreground" in off
    untagged = no_predictor_note(load_config(None, []))
    assert "no public record has a tag of measure.one_model_tagger (synthetic_background)" in untagged


def test_the_runner_is_auto_or_ray_train_and_leaves_the_config_hash_alone():
    from study.config_load import config_hash

    with pytest.raises(ConfigError, match=r"^train\.runner: must be 'auto' or 'ray_train'$"):
        load_config(None, ["train.runner=tasks"])
    default = load_config(None)
    assert default.train.runner == "auto"
    # Where a fit runs changes no number: existing runs keep their ids, and a run with the other
    # runner gets its own directory only because the key is then named.
    assert config_hash(default) == config_hash(load_config(None, ["train.runner=auto"]))
    assert config_hash(default) != config_hash(load_config(None, ["train.runner=ray_train"]))
