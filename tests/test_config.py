"""Configs: presets load, TOML round-trips, overrides are typed, every mistake is one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorefield.run.config import Config, ConfigError, apply_overrides, load_config, parse_config, to_toml

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_the_presets_exist_and_validate():
    names = {path.stem for path in CONFIGS}
    assert {"toy_ncsn", "toy_ve", "toy_vp", "toy_subvp", "tabular_vp"} <= names
    for path in CONFIGS:
        load_config(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_toml_output_reads_back_to_the_same_config(tmp_path, path):
    config = load_config(path)
    out = tmp_path / "config.toml"
    out.write_text(to_toml(config))
    assert load_config(out) == config


def test_defaults_alone_form_a_valid_config_and_round_trip(tmp_path):
    config = load_config(None)
    assert config == Config()
    (tmp_path / "c.toml").write_text(to_toml(config))
    assert load_config(tmp_path / "c.toml") == config


def test_overrides_are_parsed_as_toml_literals_with_a_string_fallback():
    raw = apply_overrides(
        {"train": {"steps": 5}},
        [
            "train.steps=7",
            "train.lr=1e-3",
            "sample.denoise=false",
            "data.name=moons",
            'data.path="a b.csv"',
            "sde.sigma_max=auto",
            "x.y.z=[1, 2]",
        ],
    )
    assert raw["train"]["steps"] == 7 and raw["train"]["lr"] == 1e-3
    assert raw["sample"]["denoise"] is False
    assert raw["data"] == {"name": "moons", "path": "a b.csv"}
    assert raw["sde"]["sigma_max"] == "auto"
    assert raw["x"]["y"]["z"] == [1, 2]


def test_overrides_apply_on_top_of_a_file(tmp_path):
    (tmp_path / "c.toml").write_text('[train]\nsteps = 10\n[data]\nname = "rings"\n')
    config = load_config(tmp_path / "c.toml", ["train.steps=20", "sde.kind=ve", "sde.sigma_max=auto"])
    assert config.train.steps == 20 and config.data.name == "rings"
    assert config.sde.kind == "ve" and config.sde.sigma_max == "auto"


BAD = [
    (["train.stepz=1"], r"unknown key 'train.stepz'; \[train\] accepts: steps"),
    (["trian.steps=1"], r"unknown key 'trian'; the top level accepts: data"),
    (["train.steps=abc"], r"train.steps: Input should be a valid integer, got 'abc'"),
    (["train.steps=1.5"], r"train.steps: Input should be a valid integer, got 1.5"),
    (['train.steps="100"'], r"train.steps: Input should be a valid integer"),
    (["train.steps=0"], r"train.steps: Input should be greater than 0"),
    (["train.batch_size=-4"], r"train.batch_size: Input should be greater than 0"),
    (["train.lr=true"], r"train.lr: Input should be a valid number"),
    (["train.ema_decay=1.0"], r"train.ema_decay: Input should be less than 1"),
    (["train.device=tpu"], r"train.device: device must be"),
    (["sde.kind=ve", "sde.sigma_min=2.0", "sde.sigma_max=1.0"], r"sigma_min \(2.0\) must be smaller than"),
    (["sde.sigma_min=50.0"], r"sigma_min \(50.0\) must be smaller than sigma_max \(50.0\)"),
    (["sde.beta_min=30.0"], r"beta_min \(30.0\) must be smaller than beta_max"),
    (["sde.sigma_max=big"], r"sde.sigma_max: sigma_max must be a positive number or \"auto\""),
    (["sde.kind=ve", "sde.sigma_max=-1"], r"sigma_max must be a positive number"),
    (["sde.kind=sde"], r"sde.kind: Input should be 've', 'vp', 'subvp' or 'ncsn', got 'sde'"),
    (["objective.kind=ncsn"], r"objective.kind = ncsn needs sde.kind = ncsn"),
    (["sde.kind=ncsn"], r"sde.kind = ncsn trains with one of ncsn, dsm, ssm, ism, not sde_dsm"),
    (["sample.sampler=ald"], r"sample.sampler = ald needs noise levels"),
    (["sde.sigma_max=auto"], r'sde.sigma_max = "auto" applies to sde.kind = ve or ncsn'),
    (["objective.importance_sampling=true"], r"importance_sampling needs kind = sde_dsm and weighting = lik"),
    (["model.embed_dim=33"], r"model.embed_dim: embed_dim must be even"),
    (["data.name=mnst"], r"unknown data set 'mnst'"),
    (["data.name=mnist"], r"data.name = mnist is read from files: set data.path"),
    (["data.hflip=true"], r"hflip and dequantize apply to images"),
    (["model.kind=unet"], r"model.kind = unet needs images"),
    (
        ["data.name=digits_images", "model.kind=unet", "model.channel_mults=[]"],
        r"model.channel_mults: List should",
    ),
    (
        ["data.name=digits_images", "model.kind=unet", "model.channel_mults=[1, 0]"],
        r"expected positive integers",
    ),
    (
        ["data.name=digits_images", "model.kind=unet", "model.dropout=1.0"],
        r"model.dropout: Input should be less",
    ),
    (["sample.use_ema=true"], r"unknown key 'sample.use_ema'; \[sample\] accepts: sampler"),
    (["train=3"], r"train: Input should be a valid dictionary"),
    (["steps"], r"override 'steps' is not of the form section.key=value"),
    (["train.steps.x=1"], r"train.steps: Input should be a valid integer, got \{'x': 1\}"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_each_mistake_is_one_clear_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_an_override_cannot_descend_into_a_value():
    with pytest.raises(ConfigError, match="'steps' is a value, not a section"):
        apply_overrides({"train": {"steps": 5}}, ["train.steps.x=1"])


def test_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nsteps = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_configs_are_frozen():
    config = parse_config({})
    with pytest.raises(Exception, match="frozen"):
        config.train.steps = 3  # type: ignore[misc]


def test_every_field_states_its_reason():
    for section in Config.model_fields.values():
        for name, field in section.annotation.model_fields.items():
            assert field.description, name


def test_the_kinds_a_config_accepts_are_those_the_builder_knows():
    from typing import get_args

    from scorefield.run.build import OBJECTIVES
    from scorefield.run.kinds import OBJECTIVE_KINDS, SDE_KINDS
    from scorefield.sde import KINDS

    fields = Config.model_fields
    assert get_args(fields["sde"].annotation.model_fields["kind"].annotation) == tuple(SDE_KINDS)
    assert get_args(fields["objective"].annotation.model_fields["kind"].annotation) == OBJECTIVE_KINDS
    assert set(OBJECTIVES) == set(OBJECTIVE_KINDS)
    assert {name: kind.sde for name, kind in SDE_KINDS.items() if not kind.ladder} == KINDS
