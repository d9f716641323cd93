"""Camera pose refinement (issue 13 (c)): every training pose of a Cycles-rendered set is perturbed by a random
rotation of ``--rot`` degrees (random axis) and a translation of ``--trans`` of the camera distance (fixed seed);
the set is fitted with true poses, without ``views.refine_poses``, with it but neither BARF's coarse-to-fine schedule
nor the held-out poses' alignment, and with the defaults (both); the fitted poses (the run's ``transforms.json``) are
compared with the true ones after a similarity alignment of the camera centres (Umeyama), as BARF reports them.

Run: ``python bench/pose_bench.py [--scene test|benchmark] [--rot 5] [--trans 0.05] [--only WORD] [--set KEY=VALUE
...]``; prints mean rotation error (degrees), mean translation error (fraction of the mean camera distance) and
held-out PSNR for each fit. At 64² one pixel spans 0.6° of the 40° lens, so the 0.5° bar is for the 200² scene.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from fit_scenes import benchmark_scene, test_scene


def rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.deg2rad(deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def perturb(src: Path, dst: Path, rot_deg: float, trans_frac: float, seed: int = 0) -> None:
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    path = dst / "transforms_train.json"
    data = json.loads(path.read_text())
    for frame in data["frames"]:
        m = np.array(frame["transform_matrix"], dtype=np.float64)
        dist = np.linalg.norm(m[:3, 3])
        m[:3, :3] = rotation(rng.normal(size=3), rot_deg) @ m[:3, :3]
        direction = rng.normal(size=3)
        m[:3, 3] += trans_frac * dist * direction / np.linalg.norm(direction)
        frame["transform_matrix"] = m.tolist()
    path.write_text(json.dumps(data, indent=1))


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising ``|s R src + t - dst|`` over point sets ``[N, 3]``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt))
    r = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / (a**2).sum(1).mean())
    return s, r, mu_d - s * r @ mu_s


def aligned_errors(
    fitted: dict[str, np.ndarray], true: dict[str, np.ndarray]
) -> tuple[list[float], float, tuple[float, np.ndarray, np.ndarray]]:
    """Per-image rotation errors (degrees) and the mean translation error (fraction of the true cameras' mean
    distance from their centroid) after the similarity ``(s, R, t)`` that best maps the fitted camera centres onto
    the true ones; and that similarity."""
    names = sorted(set(fitted) & set(true))
    a = np.stack([fitted[n] for n in names])
    b = np.stack([true[n] for n in names])
    s, r, t = umeyama(a[:, :3, 3], b[:, :3, 3])
    rot_err = []
    for fa, fb in zip(a, b, strict=True):
        rel = (r @ fa[:3, :3]).T @ fb[:3, :3]
        rot_err.append(float(np.rad2deg(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1)))))
    centres = (s * (r @ a[:, :3, 3].T)).T + t
    scale = np.linalg.norm(b[:, :3, 3] - b[:, :3, 3].mean(0), axis=1).mean()
    trans_err = np.linalg.norm(centres - b[:, :3, 3], axis=1).mean() / scale
    return rot_err, float(trans_err), (s, r, t)


def pose_errors(fitted: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> tuple[float, float]:
    rot_err, trans_err, _ = aligned_errors(fitted, true)
    return float(np.mean(rot_err)), trans_err


def frames(path: Path) -> dict[str, np.ndarray]:
    data = json.loads(path.read_text())
    # "./train/r_0" and "train/r_0.png" name the same image; test frames share stems with training ones
    return {
        str(Path(f["file_path"]).with_suffix("")).removeprefix("./"): np.array(f["transform_matrix"])
        for f in data["frames"]
    }


def main(argv: list[str]) -> int:
    from text3d.config import apply_overrides
    from text3d.fitting import fit
    from text3d.recipes.fit import FitConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rot", type=float, default=5.0)
    ap.add_argument("--trans", type=float, default=0.05)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--only", action="append", default=[], help="run only the variants whose name has this word"
    )
    ap.add_argument(
        "--scene",
        choices=("test", "benchmark"),
        default="test",
        help="the fit tests' 64² checker Suzanne (40 views) or issue 13 (b)'s 200² noise-textured one (100 views)",
    )
    args = ap.parse_args(argv)
    ds = test_scene() if args.scene == "test" else benchmark_scene()
    true = frames(ds.path / "transforms_train.json")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perturbed"
        perturb(ds.path, data, args.rot, args.trans)
        print(
            f"input poses: rotation error {pose_errors(frames(data / 'transforms_train.json'), true)[0]:.2f} deg"
        )
        base = {
            "data": str(data),
            "out_dir": str(Path(tmp) / "out"),
            "device": "cpu",
            "coarse.representation": "nerf",
            "coarse.steps": "600",
            "coarse.rays_per_step": "2048",
            "coarse.nerf.encoding.n_levels": "8",
            "coarse.nerf.encoding.log2_hashmap_size": "14",
            "coarse.nerf.encoding.max_resolution": "128",
            "coarse.nerf.hidden_dim": "32",
            "coarse.renderer.n_samples": "48",
            "coarse.optim.network_lr_scale": "1.0",
            "refine.steps": "0",
            "trainer.progress_bar": "false",
            "trainer.preview_every": "100000",
            "export.enabled": "false",
            **dict(item.split("=", 1) for item in args.set),
        }
        variants = {
            "true poses": (ds.path, {}),
            "no refinement": (data, {}),
            "refined, no coarse-to-fine, no test alignment": (
                data,
                {"views.refine_poses": "true", "coarse.coarse_to_fine": "0,0", "eval_pose_steps": "0"},
            ),
            "refined (defaults: coarse-to-fine, test alignment)": (data, {"views.refine_poses": "true"}),
        }
        for name, (source, extra) in variants.items():
            if args.only and not any(word in name for word in args.only):
                continue
            run = fit(apply_overrides(FitConfig(), {**base, "data": str(source), **extra})).run_dir
            rot, trans = pose_errors(frames(run / "transforms.json"), true)
            psnr = json.loads((run / "metrics.json").read_text())["psnr"]
            print(
                f"{name}: rotation {rot:.3f} deg, translation {100 * trans:.2f} %, held-out PSNR {psnr:.2f} dB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
