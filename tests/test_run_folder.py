"""What a run folder keeps (issue 12, item 10): only what resuming, refining further and exporting need.

A stage's last checkpoint holds no Adam state, and once the next stage has finished, the earlier stage's
checkpoint keeps only its step (its weights live on, trained further, in the later stage's checkpoint). Checkpoints
written during a stage keep everything, so a killed run still resumes bit-exactly. ``bench/run_folder_size.py``
measures a default-size run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from text3d.cli import main
from text3d.errors import Cancelled
from text3d.pipeline import export_run, generate, refine, resume
from text3d.training.checkpoint import checkpoint_path, read_checkpoint_meta


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _keys(path) -> list[str]:
    return sorted(load_file(str(path)))


def test_a_completed_run_keeps_no_optimizer_state_or_superseded_weights(make_config, tiny_guidance, capsys):
    cfg = make_config("a blue vase", refine__steps="2")
    run_dir = generate(cfg, guidance=tiny_guidance).run_dir
    coarse, fine = checkpoint_path(run_dir, "coarse"), checkpoint_path(run_dir, "refine")
    assert not [k for k in _keys(fine) if k.startswith("optim.")], "no Adam state in a finished stage"
    assert [k for k in _keys(fine) if k.startswith("model.")], "the weights are there"
    assert not [k for k in _keys(coarse) if not k.startswith("rng.")], "coarse weights live on in refine's"
    assert read_checkpoint_meta(coarse)["step"] == cfg.coarse.steps, "its step still says it finished"
    video = run_dir / "video" / "coarse-turntable.mp4"
    video_bytes = video.read_bytes() if video.exists() else None

    # exporting and refining further still work on it
    assert export_run(run_dir).meshes
    assert main(["export", str(run_dir), "--format", "glb"]) == 0 and "mesh:" in capsys.readouterr().out
    more = refine(run_dir, steps=4, guidance=tiny_guidance)
    assert more.status == "completed" and more.meshes
    assert read_checkpoint_meta(fine)["step"] == 4
    assert json.loads((run_dir / "run.json").read_text())["stages"]["refine"] == {"step": 4, "total": 4}
    if video_bytes is not None:
        assert video.read_bytes() == video_bytes, "the finished coarse stage's video is not re-rendered"


def test_checkpoints_during_a_stage_keep_adam_and_the_flags_keep_everything(make_config, tiny_guidance):
    cfg = make_config("a red apple", refine__steps="0", coarse__steps="8")

    def cancel_at_5(progress):
        if progress.step == 5 and not progress.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate(cfg, guidance=tiny_guidance, callback=cancel_at_5)
    (run_dir,) = list(Path(cfg.out_dir).iterdir())
    assert [k for k in _keys(checkpoint_path(run_dir, "coarse")) if k.startswith("optim.")], "mid-stage"
    resume(run_dir, guidance=tiny_guidance)
    assert not [k for k in _keys(checkpoint_path(run_dir, "coarse")) if k.startswith("optim.")]

    kept = make_config(
        "a red apple",
        refine__steps="2",
        trainer__keep_optimizer_state="true",
        trainer__keep_earlier_stages="true",
    )
    kept_dir = generate(kept, guidance=tiny_guidance).run_dir
    for stage in ("coarse", "refine"):
        keys = _keys(checkpoint_path(kept_dir, stage))
        assert [k for k in keys if k.startswith("optim.")] and [k for k in keys if k.startswith("model.")]
