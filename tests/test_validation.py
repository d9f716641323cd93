"""One validator for run settings (issue 12, item 5), and the paths that call it: prompt-file lines, the web form.

The CLI and YAML configs reach it through ``generate()``, which calls :func:`validate_settings` before any run
folder exists.
"""

from __future__ import annotations

import warnings

import pytest

from text3d.config import GenerateConfig, apply_overrides, load_config
from text3d.errors import ConfigError, PromptError
from text3d.validation import (
    MAX_PROMPT_CHARS,
    SuspiciousSettingWarning,
    check_settings,
    validate_settings,
)

BAD = [
    # (overrides, the key named in the message, words of the allowed range)
    ({"coarse-steps": -5}, "coarse.steps (coarse-steps) is -5", ">= 0"),
    ({"coarse-steps": 0, "refine-steps": 0}, "coarse.steps (coarse-steps) and refine.steps", "steps > 0"),
    ({"coarse-res": 0}, "coarse.resolution (coarse-res) is 0", "even integer from 16 to 4096"),
    ({"coarse-res": 1}, "coarse.resolution (coarse-res) is 1", "from 16"),
    ({"coarse-res": 7}, "coarse.resolution (coarse-res) is 7", "from 16"),
    ({"coarse-res": 17}, "coarse.resolution (coarse-res) is 17", "even"),  # libx264 wrote a 0-byte video
    ({"refine-res": 8}, "refine.resolution (refine-res) is 8", "from 16"),
    ({"tet-res": 33}, "refine.dmtet.resolution (tet-res) is 33", "even integer from 8 to 512"),
    ({"tet-res": 1024}, "refine.dmtet.resolution (tet-res) is 1024", "to 512"),
    ({"guidance-scale": 0}, "coarse.sds.guidance_scale (guidance-scale) is 0.0", "> 0"),
    ({"guidance-scale": -3}, "guidance_scale (guidance-scale) is -3.0", "> 0"),
    ({"guidance-scale": "nan"}, "guidance_scale (guidance-scale) is nan", "> 0"),
    ({"coarse.sds.t_range": "0.5,0.2"}, "coarse.sds.t_range is (0.5, 0.2)", "in (0, 1), the first below"),
    ({"refine.sds.t_range": "0,0.5"}, "refine.sds.t_range is (0.0, 0.5)", "in (0, 1)"),
    ({"coarse.sds.t_range": "0.2,1.5"}, "coarse.sds.t_range is (0.2, 1.5)", "in (0, 1)"),
    ({"coarse.sds.t_anneal_to": "0.01"}, "coarse.sds.t_anneal_to is 0.01", "above coarse.sds.t_range"),
    ({"coarse.sds.weighting": "nope"}, "coarse.sds.weighting is 'nope'", "one of sds, uniform, fantasia"),
    ({"trainer.log_every": 0}, "trainer.log_every is 0", ">= 1"),
    ({"trainer.checkpoint_every": -1}, "trainer.checkpoint_every is -1", ">= 1"),
    ({"trainer.video_res": 15}, "trainer.video_res is 15", "0 (auto) or"),
    ({"trainer.video_fps": 0}, "trainer.video_fps is 0", "from 1"),
    ({"export.texture_size": 4}, "export.texture_size is 4", "from 16 to 8192"),
    ({"coarse.cameras.batch_size": 0}, "coarse.cameras.batch_size is 0", ">= 1"),
    ({"refine.cameras.fovy_range": "50,20"}, "refine.cameras.fovy_range is (50.0, 20.0)", "(0, 180)"),
    ({"model.dtype": "fp8"}, "model.dtype is 'fp8'", "one of auto"),
]


@pytest.mark.parametrize(("overrides", "named", "allowed"), BAD, ids=[str(b[0]) for b in BAD])
def test_out_of_range_settings_are_one_line_naming_key_value_and_range(overrides, named, allowed):
    cfg = apply_overrides(GenerateConfig(prompt="a mug"), overrides)
    with pytest.raises(ConfigError) as err:
        check_settings(cfg)
    msg = str(err.value)
    assert "\n" not in msg and named in msg and allowed in msg, msg


GOOD = [
    {},  # the defaults
    {"coarse-steps": 0, "refine-steps": 10},  # one stage may be skipped
    {"refine-steps": 0},
    {"coarse-res": 16, "refine-res": 18, "tet-res": 8},  # the smallest allowed
    {"coarse.sds.t_range": "0.02,0.98", "coarse.sds.t_anneal_to": "0.5"},
    {"trainer.video_res": 0, "trainer.preview_every": 0},  # 0 = auto / off
    {"guidance-scale": 7.5},
]


@pytest.mark.parametrize("overrides", GOOD, ids=[str(g) for g in GOOD])
def test_legal_settings_pass_without_warnings(overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_settings(apply_overrides(GenerateConfig(), overrides)) == []


def test_suspicious_values_warn_once_with_one_clear_line():
    cfg = apply_overrides(GenerateConfig(), {"guidance-scale": 1e9})
    with pytest.warns(SuspiciousSettingWarning) as caught:
        notes = validate_settings(cfg)
    assert len(notes) == len(caught) == 1, notes  # one line, although both stages got the value
    assert "guidance-scale" in notes[0] and "1e+09" in notes[0] and "\n" not in notes[0]
    assert check_settings(apply_overrides(GenerateConfig(), {"tet-res": 512}))  # legal, but ~100M tets


def test_test_and_preset_configs_are_valid(make_config):
    from text3d.config import PRESETS

    assert check_settings(make_config("a mug")) == []
    for preset in PRESETS.values():
        assert check_settings(apply_overrides(GenerateConfig(), preset)) == []


def test_a_yaml_config_with_a_bad_value_is_rejected_by_the_same_check(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("coarse:\n  steps: -5\n  resolution: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"coarse\.steps \(coarse-steps\) is -5"):
        check_settings(load_config(path))


# ---------------------------------------------------------------------------------------------- batch lines
def test_prompt_file_lines_out_of_range_are_file_line_errors_before_anything_runs(tmp_path):
    from text3d.batch.promptfile import parse_prompt_file

    pfile = tmp_path / "p.txt"
    pfile.write_text(
        "a good mug\n"
        "a vase | coarse-steps=-5\n"
        "a fox | coarse-res=1\n"
        '{"skip": 1}\n'
        "an owl | guidance-scale=1e9\n"
        "a cup | coarse-steps=0 refine-steps=0\n",
        encoding="utf-8",
    )
    parsed = parse_prompt_file(pfile, GenerateConfig())
    assert [i.line for i in parsed.items] == [1, 4, 5]
    errors = [str(e) for e in parsed.errors]
    assert errors[0] == f"{pfile}:2: coarse.steps (coarse-steps) is -5; it must be an integer >= 0", errors
    assert errors[1].startswith(f"{pfile}:3: coarse.resolution (coarse-res) is 1;"), errors
    assert errors[2].startswith(f"{pfile}:6: coarse.steps (coarse-steps) and refine.steps"), errors
    assert [str(w) for w in parsed.warnings if "guidance" in str(w)][0].startswith(f"{pfile}:5: ")

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a mug", "tet-res": 7}\n', encoding="utf-8")
    (issue,) = parse_prompt_file(jsonl, GenerateConfig()).errors
    assert str(issue).startswith(f"{jsonl}:1: refine.dmtet.resolution (tet-res) is 7;")


# ---------------------------------------------------------------------------------------------- the web form
def test_the_web_form_uses_the_same_ranges(make_config):
    from text3d.app.form import FormValues, config_from_form

    base = make_config("")
    for values, named in (
        (FormValues(prompt="x", steps=-1), "coarse.steps (coarse-steps) is -1"),
        (FormValues(prompt="x", resolution=1), "coarse.resolution (coarse-res) is 1"),
        (FormValues(prompt="x", resolution=17), "coarse.resolution (coarse-res) is 17"),
        (FormValues(prompt="x", guidance_scale=0), "guidance_scale (guidance-scale) is 0.0"),
        (FormValues(prompt="x", steps=0, refine_steps=0), "steps (coarse-steps) and refine.steps"),
        (FormValues(prompt="x", texture_size=8), "export.texture_size is 8"),
        (FormValues(prompt="x", weighting="nope"), "coarse.sds.weighting is 'nope'"),
    ):
        with pytest.raises(ConfigError) as err:
            config_from_form(base, values)
        assert named in str(err.value), (values, str(err.value))
    assert config_from_form(base, FormValues(prompt="x", steps=0, refine_steps=3)).coarse.steps == 0


def test_the_web_form_limits_prompt_length_with_a_clear_message(make_config):
    from text3d.app.form import FormValues, config_from_form

    base = make_config("")
    ok = "a" * MAX_PROMPT_CHARS
    assert config_from_form(base, FormValues(prompt=ok)).prompt == ok
    with pytest.raises(PromptError, match=rf"the prompt is {MAX_PROMPT_CHARS + 1} characters; the limit is"):
        config_from_form(base, FormValues(prompt=ok + "a"))
    with pytest.raises(PromptError, match="the negative prompt is 5000 characters"):
        config_from_form(base, FormValues(prompt="x", negative_prompt="b" * 5000))


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_out_of_range_flags_and_yaml_are_one_line_exit_2_and_no_run_folder(
    tiny_model_dir, tmp_path, capsys
):
    """Acceptance (e) for the CLI and YAML configs."""
    from text3d.cli import main

    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("coarse:\n  resolution: 1\n", encoding="utf-8")
    for flags, named in (
        (["--coarse-steps", "-5", "--refine-steps", "0"], "coarse.steps (coarse-steps) is -5"),
        (["--coarse-res", "1"], "coarse.resolution (coarse-res) is 1"),
        (["--config", str(yaml_file)], "coarse.resolution (coarse-res) is 1"),
    ):
        out = tmp_path / "out"
        argv = ["generate", "a mug", "--model", str(tiny_model_dir), "--device", "cpu", "--out", str(out)]
        assert main([*argv, *flags]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], (flags, err)
        assert not out.exists() or not any(out.iterdir()), flags
