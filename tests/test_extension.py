"""The extension points are real: a view source and an objective written here, in the test file alone, train a
NeRF through the unchanged trainer, checkpoint and resume bit-exactly, and export through the asset path.

Nothing in the library knows these two classes: if the trainer, the checkpoint or export assumed SDS or orbit
cameras anywhere, this file would fail.
"""

from __future__ import annotations

import json

import pytest
import torch
import trimesh
from safetensors.torch import load_file
from torch import nn

from text3d.cameras import Cameras, turntable_cameras
from text3d.errors import Cancelled
from text3d.export.exporter import ExportConfig
from text3d.fields.encoding import HashGridConfig
from text3d.fields.nerf import BackgroundConfig, NeRFFieldConfig
from text3d.objectives.base import Objective, ObjectiveOutput
from text3d.pipeline import deterministic_algorithms, export_trained
from text3d.render.shading import DiffuseShader, ShadingConfig
from text3d.representations.nerf import NeRFConfig, NeRFRepresentation
from text3d.training.stage import Stage
from text3d.training.trainer import Trainer, TrainerConfig
from text3d.views import ViewBatch, ViewSource

RES = 24


class FixedViews(ViewSource):
    """A ring of fixed cameras with one target image each, visited in turn, and a learnable shift of every camera
    (trainable state owned by a view source, as pose corrections will be)."""

    def __init__(self, cameras: Cameras, targets: torch.Tensor):
        super().__init__()
        self.cameras, self.resolution = cameras, targets.shape[1]
        self.register_buffer("targets", targets)  # [N, H, W, 3]
        self.shift = nn.Parameter(torch.zeros(3))

    def sample(self, step: int, device: torch.device) -> ViewBatch:
        i = step % len(self.cameras)
        cam = self.cameras[i].to(device)
        c2w = cam.c2w.clone()
        c2w[:, :3, 3] = c2w[:, :3, 3] + self.shift
        cam = Cameras(c2w, cam.fovy, cam.elevation, cam.azimuth, cam.distance)
        return ViewBatch(cam, self.resolution, self.resolution, target=self.targets[i : i + 1])

    def preview_cameras(self, n: int, device: torch.device) -> Cameras:
        return self.cameras[:n].to(device)

    def param_groups(self) -> list[dict]:
        return [{"name": "camera_shift", "params": [self.shift], "lr": 1e-3}]


class L2ToImage(Objective):
    """Mean squared error to the view's target through a learnable gain (trainable objective state)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def param_groups(self) -> list[dict]:
        return [{"name": "gain", "params": [self.gain], "lr": 1e-2}]

    def forward(self, out, views, progress, timer=None) -> ObjectiveOutput:
        err = ((out.rgb * self.gain - views.target) ** 2).mean()
        return ObjectiveOutput(terms={"l2": 10.0 * err}, logs={"gain": self.gain.detach()})


def _disk_targets(n: int) -> torch.Tensor:
    """A red disk on white, the picture of a red ball from any side."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, RES), torch.linspace(-1, 1, RES), indexing="ij")
    disk = ((xx**2 + yy**2) < 0.5**2).float()[..., None]
    img = disk * torch.tensor([0.9, 0.1, 0.1]) + (1 - disk) * torch.ones(3)
    return img.expand(n, RES, RES, 3).contiguous()


def _stage(steps: int) -> Stage:
    torch.manual_seed(0)
    nerf = NeRFRepresentation(
        NeRFConfig(
            field=NeRFFieldConfig(
                encoding=HashGridConfig(n_levels=6, log2_hashmap_size=12, max_resolution=64), hidden_dim=32
            ),
            background=BackgroundConfig(kind="solid"),
            lr=0.05,
            network_lr_scale=1.0,
        )
    )
    views = FixedViews(
        turntable_cameras(4, elevation_deg=10.0, distance=2.0, fovy_deg=50.0), _disk_targets(4)
    )
    shader = DiffuseShader(ShadingConfig(albedo_only_steps=10**6))
    return Stage("fixed", steps, nerf, views, shader, L2ToImage())


CFG = TrainerConfig(log_every=2, preview_every=6, checkpoint_every=4, video_frames=2, progress_bar=False)


def _train(run_dir, steps: int, cancel_at: int | None = None) -> Stage:
    stage = _stage(steps)
    run_dir.mkdir(exist_ok=True)

    def stop(progress):
        if progress.step == cancel_at:
            raise Cancelled()

    trainer = Trainer(stage, run_dir, CFG, stop)
    trainer.resume()
    with deterministic_algorithms(True):
        try:
            trainer.run()
        except Cancelled:
            pass
    return stage


def test_a_view_source_and_an_objective_from_outside_train_resume_and_export(tmp_path):
    straight = _train(tmp_path / "straight", 16)
    losses = [json.loads(x)["l2"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0], losses  # the unchanged trainer optimised the foreign objective
    assert (tmp_path / "straight" / "previews" / "latest.png").is_file()

    _train(tmp_path / "resumed", 16, cancel_at=6)
    ckpt = tmp_path / "resumed" / "checkpoints" / "fixed.safetensors"
    assert load_file(str(ckpt))["rng.cpu"].numel() > 0
    _train(tmp_path / "resumed", 16)  # picks up from the step-6 checkpoint
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "fixed.safetensors"))
    b = load_file(str(ckpt))
    assert a.keys() == b.keys()
    # every part's state is in the one file: the field, the view source's shift and the objective's gain
    assert {
        "model.views.shift",
        "model.objective.gain",
        "model.representation.field.encoding.embeddings",
    } <= a.keys()
    assert float(a["model.objective.gain"]) != 1.0 and float(a["model.views.shift"].abs().sum()) > 0
    for key in a:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(a[key], b[key]), key

    result = export_trained(
        straight.eval(),
        tmp_path / "mesh",
        "ball",
        ExportConfig(formats=("glb",), grid_resolution=32, texture_size=64, threshold_views=4),
    )
    mesh = trimesh.load(result.files[0], force="mesh")
    assert len(mesh.faces) > 50
    assert result.threshold_iou is not None and result.threshold_iou > 0.8
    colour = mesh.visual.to_color().vertex_colors[:, :3].mean(0) / 255.0
    assert colour[0] > colour[1] + 0.3, colour  # the ball is red: colour came through the asset's albedo


def test_the_trainer_refuses_a_stage_without_an_objective(tmp_path):
    stage = _stage(4)
    stage.objective = None
    with pytest.raises(ValueError, match="no objective"):
        Trainer(stage, tmp_path, CFG)
