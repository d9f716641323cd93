"""Edge-case search: gradient descent on scene parameters until a picture shows a wanted rare case.

Random sampling rarely gives, say, an object 60 % hidden or lit at 8 % luminance. Because the renderer is
differentiable, the scene itself can be optimised: each :class:`Target` measures a soft (differentiable) value on
a render, names the scene tensors it may move, and has an exact value measured on the final, hard render.
:func:`search` runs Adam on ``sum (soft - goal)^2`` from the random scene, stops as soon as every exact value is
within the tolerance, restarts from a fresh random start when a run ends outside it, and bakes the result into the
scene. It never hangs: ``steps * (restarts + 1)`` renders at most; an unreachable goal is reported per image.

Targets (``--target name=value``):

- ``occlusion``: fraction of the subject (the most visible labelled object) hidden by other objects and an added
  occluder (a box), whose position in the camera plane is the knob. The soft value comes from the subject's
  antialiased coverage, whose silhouette term moves the occluder's edges; while the occluder touches none of the
  subject, a pull towards the subject's centre on screen gives the first gradient.
- ``brightness``: mean luminance (Rec. 709, sRGB values, before camera effects) of the subject's visible pixels;
  knobs are the light's intensity, direction and the ambient level.

A new target is a :class:`Target` subclass added to :data:`TARGETS` (or passed to :func:`search` directly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from text3d.dataset.assets import primitive
from text3d.dataset.config import SearchConfig
from text3d.dataset.scene import Placed, Render, Scene, clip_positions, render_scene, scene_mesh
from text3d.errors import ConfigError

_LUMA = (0.2126, 0.7152, 0.0722)
STOP_FRACTION = 0.5
"""The search stops once every value is within this fraction of the tolerance, so the picture written (whose
value is measured again after the knobs are baked into the scene) lands well inside the band."""


@dataclass
class Knobs:
    """What a target moves: per-object world translations and light overrides, as tensors."""

    translations: dict[int, Tensor]
    light: dict[str, Tensor]


class Target:
    """One wanted property of a picture. Subclasses set ``name`` and the valid ``low``/``high`` goal range."""

    name = ""
    low, high = 0.0, 1.0

    def __init__(self, goal: float):
        self.goal = float(goal)

    def start(self, scene: Scene, subject: int, rng: np.random.Generator, size: int, device) -> None:
        """Prepare a fresh random start (add objects, draw the knobs' initial values)."""

    def knobs(self) -> Knobs:
        return Knobs({}, {})

    def parameters(self) -> list[Tensor]:
        return []

    def soft(self, render: Render, scene: Scene, subject: int, knobs: Knobs) -> Tensor:
        raise NotImplementedError

    def exact(self, scene: Scene, subject: int, render: Render, size: int, device) -> float:
        raise NotImplementedError

    def bake(self, scene: Scene) -> None:
        """Write the knobs' values into the scene (so the final render is the found one)."""


class OcclusionTarget(Target):
    """Fraction of the subject hidden; the knob is an added box occluder's shift in the camera plane (in units of
    the subject's size), starting from a random offset at 45-75 % of the subject's depth."""

    name = "occlusion"
    low, high = 0.0, 1.0
    occluder: int | None = None

    def start(self, scene, subject, rng, size, device) -> None:
        alone = subject_alone(scene, subject, size, device)
        self.full, self.alone = int(alone.sum()), alone
        obj = scene.objects[subject]
        c2w = scene.c2w
        rel = obj.matrix[:3, 3] - c2w[:3, 3]
        depth = float(-(c2w[:3, :3].T @ rel)[2])
        scale = float(np.linalg.norm(obj.matrix[:3, 0]))
        frac = rng.uniform(0.45, 0.75)  # the occluder sits between the camera and the subject
        m = np.eye(4)
        m[:3, :3] = np.diag([scale * rng.uniform(0.7, 1.3), scale * rng.uniform(0.7, 1.3), scale * 0.2])
        m[:3, :3] = c2w[:3, :3] @ m[:3, :3]  # facing the camera
        offset = rng.uniform(-1.0, 1.0, size=2) * scale * frac * 1.5
        centre_cam = np.array([0.0, 0.0, -depth * frac])
        centre_cam[:2] = (c2w[:3, :3].T @ rel)[:2] * frac + offset
        m[:3, 3] = c2w[:3, :3] @ centre_cam + c2w[:3, 3]
        if self.occluder is None:
            scene.objects.append(Placed(primitive("box", tuple(rng.uniform(0.05, 0.95, size=3))), -1, m))
            self.occluder = len(scene.objects) - 1
        else:
            scene.objects[self.occluder].matrix = m
        self.shift = torch.zeros(2, dtype=torch.float32, device=device, requires_grad=True)
        self.axes = torch.tensor(c2w[:3, :2], dtype=torch.float32, device=device)  # camera right, up
        self.step_size = scale

    def knobs(self) -> Knobs:
        return Knobs({self.occluder: self.axes @ self.shift * self.step_size}, {})

    def parameters(self) -> list[Tensor]:
        return [self.shift]

    def soft(self, render, scene, subject, knobs) -> Tensor:
        occ = 1.0 - render.covered.sum() / max(self.full, 1)
        over = render.object_id == self.occluder
        touching = bool((over & self.alone).any())
        hidden = not bool((render.object_id == subject).any())
        if touching and not hidden:
            return occ  # the occluder's silhouette crosses the subject: the antialias term has a gradient
        # No silhouette gradient: pull the occluder onto the subject on screen, or push it off if it hides all.
        mesh = scene_mesh(scene, render.object_id.device, knobs.translations, only=[subject, self.occluder])
        pos = clip_positions(scene, mesh.verts)
        ndc = pos[:, :2] / pos[:, 3:]
        a = ndc[mesh.faces[mesh.face_object == subject, 0]].mean(0).detach()
        b = ndc[mesh.faces[mesh.face_object == self.occluder, 0]].mean(0)
        dist = ((a - b) ** 2).sum().add(1e-8).sqrt()
        if hidden and self.goal < 1.0:
            return self.goal + (1.0 - dist).clamp_min(0.0)
        return self.goal - dist

    def exact(self, scene, subject, render, size, device) -> float:
        visible = int((render.object_id == subject).sum())
        return 1.0 - visible / max(self.full, 1)

    def bake(self, scene) -> None:
        with torch.no_grad():
            t = (self.axes @ self.shift * self.step_size).cpu().numpy().astype(np.float64)
        scene.objects[self.occluder].matrix[:3, 3] += t
        self.shift = torch.zeros_like(self.shift, requires_grad=True)


class BrightnessTarget(Target):
    """Mean luminance of the subject's visible pixels; knobs are log intensity, log ambient and the light
    direction (starting from the random scene's light)."""

    name = "brightness"
    low, high = 0.0, 1.0

    def start(self, scene, subject, rng, size, device) -> None:
        self.log_intensity = torch.tensor(
            math.log(max(scene.light_intensity, 1e-3)), device=device, requires_grad=True
        )
        self.log_ambient = torch.tensor(math.log(max(scene.ambient, 1e-3)), device=device, requires_grad=True)
        self.direction = torch.tensor(
            scene.light_direction, dtype=torch.float32, device=device, requires_grad=True
        )

    def knobs(self) -> Knobs:
        return Knobs(
            {},
            {
                "intensity": self.log_intensity.exp(),
                "ambient": self.log_ambient.exp(),
                "direction": self.direction,
            },
        )

    def parameters(self) -> list[Tensor]:
        return [self.log_intensity, self.log_ambient, self.direction]

    def soft(self, render, scene, subject, knobs) -> Tensor:
        return luminance(render, subject)

    def exact(self, scene, subject, render, size, device) -> float:
        return float(luminance(render, subject).detach())

    def bake(self, scene) -> None:
        with torch.no_grad():
            scene.light_intensity = float(self.log_intensity.detach().exp())
            scene.ambient = float(self.log_ambient.detach().exp())
            d = self.direction.detach().cpu().numpy().astype(np.float64)
            scene.light_direction = d / np.linalg.norm(d)


TARGETS: dict[str, type[Target]] = {"occlusion": OcclusionTarget, "brightness": BrightnessTarget}
"""The targets ``--target`` knows by name."""


def luminance(render: Render, subject: int) -> Tensor:
    """Mean Rec. 709 luminance of the subject's visible pixels (0 when it shows none)."""
    mask = render.object_id == subject
    if not bool(mask.any()):
        return render.rgb.sum() * 0.0
    w = torch.tensor(_LUMA, dtype=render.rgb.dtype, device=render.rgb.device)
    return (render.rgb[mask] * w).sum(-1).mean()


def subject_alone(scene: Scene, subject: int, size: int, device) -> Tensor:
    """``[H, W]`` bool: the pixels the subject would cover with nothing in front of it."""
    with torch.no_grad():
        r = render_scene(scene, size, None, device, antialias=False, only=[subject])
    return r.object_id == subject


def parse_targets(items: tuple[str, ...] | list[str]) -> list[Target]:
    """``["occlusion=0.6", ...]`` to targets; one line naming the problem otherwise."""
    out: list[Target] = []
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in TARGETS:
            raise ConfigError(f"--target {item!r}: expected NAME=VALUE with NAME one of {', '.join(TARGETS)}")
        try:
            goal = float(value)
        except ValueError:
            raise ConfigError(f"--target {item!r}: {value.strip()!r} is not a number") from None
        cls = TARGETS[name]
        if not (cls.low <= goal <= cls.high) or not math.isfinite(goal):
            raise ConfigError(f"--target {item!r}: {name} must be in [{cls.low:g}, {cls.high:g}]")
        if any(t.name == name for t in out):
            raise ConfigError(f"--target {name} given twice")
        out.append(cls(goal))
    return out


def pick_subject(scene: Scene, size: int, device) -> int | None:
    """The labelled object with the most visible pixels, or ``None`` if none shows."""
    with torch.no_grad():
        r = render_scene(scene, size, None, device, antialias=False)
    ids = [k for k, o in enumerate(scene.objects) if o.class_id >= 0]
    counts = {k: int((r.object_id == k).sum()) for k in ids}
    best = max(ids, key=lambda k: counts[k], default=None)
    return best if best is not None and counts[best] > 0 else None


def _merge(knobs: list[Knobs]) -> Knobs:
    out = Knobs({}, {})
    for k in knobs:
        out.translations.update(k.translations)
        out.light.update(k.light)
    return out


def measure(targets: list[Target], scene: Scene, subject: int, size: int, device) -> dict[str, float]:
    """Exact values of the targets on the scene as it stands (the picture that will be written)."""
    with torch.no_grad():
        r = render_scene(scene, size, None, device, antialias=False)
    return {t.name: t.exact(scene, subject, r, size, device) for t in targets}


def search(
    scene: Scene,
    targets: list[Target],
    cfg: SearchConfig,
    rng: np.random.Generator,
    size: int,
    device: torch.device | str = "cpu",
) -> dict:
    """Optimise ``scene`` in place until every target is within ``cfg.tolerance``; returns what happened.

    Returns:
        ``{"subject", "goals", "achieved", "reached", "steps", "starts"}`` (``achieved`` measured on the final
        scene), or ``{"reached": False, "reason": ...}`` when no labelled object is visible.
    """
    device = torch.device(device)
    targets = [type(t)(t.goal) for t in targets]  # fresh state per image (an occluder belongs to one scene)
    subject = pick_subject(scene, size, device)
    goals = {t.name: t.goal for t in targets}
    if subject is None:
        return {"goals": goals, "reached": False, "reason": "no labelled object visible", "steps": 0}
    total_steps = 0
    best: tuple[float, dict] | None = None
    starts = 0
    for _ in range(cfg.restarts + 1):
        starts += 1
        for t in targets:
            t.start(scene, subject, rng, size, device)
        params = [p for t in targets for p in t.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        for _ in range(cfg.steps):
            knobs = _merge([t.knobs() for t in targets])
            r = render_scene(
                scene, size, None, device, antialias=False, translations=knobs.translations,
                light=knobs.light, soft_object=subject,
            )  # fmt: skip
            exact = {t.name: t.exact(scene, subject, r, size, device) for t in targets}
            if all(abs(exact[t.name] - t.goal) <= STOP_FRACTION * cfg.tolerance for t in targets):
                break
            loss = sum((t.soft(r, scene, subject, knobs) - t.goal) ** 2 for t in targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_steps += 1
        for t in targets:
            t.bake(scene)
        achieved = measure(targets, scene, subject, size, device)
        err = max(abs(achieved[t.name] - t.goal) for t in targets)
        if best is None or err < best[0]:
            best = (err, {"achieved": achieved, "state": _snapshot(scene)})
        if err <= cfg.tolerance:
            break
    assert best is not None
    _restore(scene, best[1]["state"])
    achieved = best[1]["achieved"]
    return {
        "subject": subject,
        "goals": goals,
        "achieved": achieved,
        "reached": bool(best[0] <= cfg.tolerance),
        "steps": total_steps,
        "starts": starts,
    }


def _snapshot(scene: Scene) -> dict:
    return {
        "matrices": [o.matrix.copy() for o in scene.objects],
        "light": (scene.light_direction.copy(), scene.light_intensity, scene.ambient),
    }


def _restore(scene: Scene, state: dict) -> None:
    for o, m in zip(scene.objects, state["matrices"], strict=True):
        o.matrix = m
    scene.light_direction, scene.light_intensity, scene.ambient = state["light"]
