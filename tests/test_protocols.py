"""``protocol:`` presets: each sets the published choices under the config's own values, the run
is named by what it computes (not by the preset's name), and the report lists every choice where a
run differs from the published protocol."""
from __future__ import annotations

import pytest

from study.config.protocols import FIXED, deviations
from study.config_load import config_to_dict, load_config
from study.errors import ConfigError
from study.frame.context import run_id_for
from study.report.protocol_html import protocol_lines, protocol_section

PUBLISHED_SSL = ["embed.crop.rule=strips", "data.resize=imagenet_center_crop", "search.k=100", "search.metric=l2",
                 "measure.top_q_size=floor"]


@pytest.mark.parametrize("size, threshold", [(32, 14), (64, 29), (224, 100)])  # round(100 * S / 224)
def test_the_published_ssl_preset_and_its_crop_threshold_scaled_to_the_input(size, threshold):
    cfg = load_config(None, ["protocol=dejavu-2023", f"data.image_size={size}"])
    assert (cfg.embed.crop.rule, cfg.embed.crop.min_side, cfg.data.resize, cfg.search.k, cfg.search.metric) == \
        ("strips", threshold, "imagenet_center_crop", 100, "l2")


def test_a_config_changes_single_choices_on_top_of_its_protocol():
    cfg = load_config(None, ["protocol=dejavu-2023", "search.k=20", "embed.crop.min_side=5"])
    assert (cfg.search.k, cfg.embed.crop.min_side, cfg.embed.crop.rule) == (20, 5, "strips")
    found = {d["choice"]: d for d in deviations(cfg.study, cfg.protocol, config_to_dict(cfg))}
    assert found["search.k"] == {"choice": "search.k", "published": 100, "this run": 20}
    assert found["embed.crop.min_side"]["published"] == 14 and "embed.crop.rule" not in found


def test_a_run_is_named_by_what_it_computes_not_by_its_protocol():
    preset = load_config(None, ["protocol=dejavu-2023"])
    by_hand = load_config(None, [*PUBLISHED_SSL, "embed.crop.min_side=14"])
    assert run_id_for(preset) == run_id_for(by_hand) != run_id_for(load_config(None, []))


def test_the_deviations_of_a_default_run_and_of_a_published_one():
    default = load_config(None, [])
    listed = deviations(default.study, default.protocol, config_to_dict(default))
    assert [d["choice"] for d in listed] == ["embed.crop.rule", "embed.crop.min_side", "data.resize", "search.k",
                                             "search.metric", "measure.top_q_size",
                                             *(c for c, _, _ in FIXED["dejavu-2023"])]
    published = load_config(None, ["protocol=dejavu-2023"])
    assert [d["choice"] for d in deviations(published.study, published.protocol, config_to_dict(published))] == \
        [c for c, _, _ in FIXED["dejavu-2023"]]  # only what no key sets yet
    oss = load_config(None, ["protocol=dejavu-oss-2024"])
    assert [d["choice"] for d in deviations(oss.study, oss.protocol, config_to_dict(oss))] == \
        ["label vote ties", "naive-Bayes ties"]  # its own ties, beside the vote's
    vlm = load_config(None, ["study=vlm_dejavu", "train.method=clip"])
    found = deviations(vlm.study, vlm.protocol, config_to_dict(vlm))
    assert {"choice": "measure.headline_rule", "published": "union", "this run": "top_n"} in found
    assert "one-model test" in [d["choice"] for d in found]  # no pretrained text model given
    vlm = load_config(None, ["study=vlm_dejavu", "train.method=clip", "protocol=vlm-dejavu-2024",
                             "measure.text_model=/models/minilm"])
    assert deviations(vlm.study, vlm.protocol, config_to_dict(vlm)) == []  # every published choice made


def test_an_unknown_protocol_is_one_clear_error():
    with pytest.raises(ConfigError, match="protocol: unknown value 'dejavu-2022'; choose from default, dejavu-2023"):
        load_config(None, ["protocol=dejavu-2022"])


def test_the_report_names_the_protocol_and_each_differing_choice():
    report = {"protocol": {"name": "default", "compared_with": "dejavu-2023", "deviations": [
        {"choice": "search.k", "published": 100, "this run": 50}]}}
    assert protocol_lines(report) == ["protocol default; differs from dejavu-2023 in 1 choice(s): search.k 50 "
                                      "(published 100)"]
    assert "<td>search.k</td><td>100</td><td>50</td>" in protocol_section(report).replace("\n", "")
    report["protocol"]["deviations"] = []
    assert protocol_lines(report) == ["protocol default: every choice as published (dejavu-2023)"]


def test_a_protocol_from_the_command_line_replaces_the_files_choices(tmp_path):
    import os

    quickstart = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/quickstart.yaml")
    file_cfg = load_config(quickstart, [])
    assert (file_cfg.embed.crop.rule, file_cfg.search.k) == ("background", 50)  # the file sets both
    cli = load_config(quickstart, ["protocol=dejavu-2023", "search.k=20"])
    assert (cli.embed.crop.rule, cli.embed.crop.min_side, cli.search.metric, cli.search.k) == ("strips", 14, "l2", 20)
    (tmp_path / "study.yaml").write_text("protocol: dejavu-2023\nsearch:\n  k: 30\n")
    in_file = load_config(str(tmp_path / "study.yaml"), [])
    assert (in_file.search.k, in_file.embed.crop.rule) == (30, "strips")  # the file's own value on top
