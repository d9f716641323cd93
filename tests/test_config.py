"""Configs: YAML round trip, overrides, and errors that name the valid keys."""

from __future__ import annotations

import dataclasses

import pytest

from text3d.config import GenerateConfig, apply_overrides, load_config, save_config, to_dict
from text3d.errors import ConfigError


def test_yaml_round_trip_is_lossless(tmp_path):
    cfg = apply_overrides(
        GenerateConfig(prompt="a ceramic owl mug"),
        {
            "seed": "7",
            "coarse-steps": "123",
            "coarse.sds.t_anneal_to": "0.5",
            "coarse.cameras.fovy_range": "30,60",
        },
    )
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert again.coarse.cameras.fovy_range == (30.0, 60.0) and again.coarse.sds.t_anneal_to == 0.5
    assert to_dict(again)["coarse"]["steps"] == 123


def test_overrides_and_aliases():
    cfg = apply_overrides(
        GenerateConfig(), {"guidance-scale": "50", "perp-neg": "true", "coarse.sds.grad_clip": "none"}
    )
    assert cfg.coarse.sds.guidance_scale == 50.0 and cfg.coarse.sds.perp_neg is True
    assert cfg.coarse.sds.grad_clip is None
    assert GenerateConfig().coarse.sds.guidance_scale == 100.0  # defaults untouched (frozen dataclasses)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("coarse.stepz", "3", "valid keys"),
        ("seed", "abc", "expected an integer"),
        ("coarse.steps", "1.5", "expected an integer"),
        ("coarse.sds.perp_neg", "maybe", "true or false"),
        ("coarse.cameras.fovy_range", "1,2,3", "expected 2 values"),
    ],
)
def test_bad_overrides_name_the_problem(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(GenerateConfig(), {key: value})


def test_bad_yaml_files(tmp_path):
    (tmp_path / "a.yaml").write_text("coarse: {steps: 10, colour: red}\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("coarse: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("!!python/object:os.system {}\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "c.yaml")  # safe_load refuses to build objects


def test_part_kinds_round_trip_and_unknown_kinds_are_one_line_errors(tmp_path, tiny_model_dir, capsys):
    """Each stage picks its representation, view source, shader and objective by a ``kind`` field; YAML and
    ``--set`` carry them, and an unknown kind stops the run before anything is loaded or written."""
    from text3d.cli import main

    cfg = GenerateConfig(prompt="a mug")
    text = (save_config(cfg, tmp_path / "config.yaml")).read_text()
    for line in (
        "representation: nerf",
        "representation: dmtet",
        "views: orbit",
        "shader: diffuse",
        "objective: sds",
    ):
        assert line in text
    assert load_config(tmp_path / "config.yaml") == cfg

    out = tmp_path / "out"
    base = ["generate", "a mug", "--model", str(tiny_model_dir), "--out", str(out), "--device", "cpu"]
    for key, value, valid in (
        ("coarse.representation", "gaussians", "nerf, sdf"),
        ("refine.representation", "nerf", "dmtet"),
        ("coarse.views", "photos", "orbit"),
        ("refine.shader", "pbr", "diffuse"),
        ("coarse.objective", "clip", "sds"),
    ):
        capsys.readouterr()
        assert main([*base, "--set", f"{key}={value}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{key} must be one of {valid}; got '{value}'" in err, err
        assert not out.exists() or not any(out.iterdir())  # no run folder

    (tmp_path / "bad.yaml").write_text("coarse: {shader: toon}\n")
    assert main([*base, "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "coarse.shader must be one of diffuse; got 'toon'" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
