"""``text3d dataset`` benchmarks: label exactness on 200 images, images/s at 640², edge-case hit rates.

Run ``python bench/dataset_bench.py labels|speed|edge [...]`` from the repository root (``PYTHONPATH=.``); each
part prints one JSON line and appends it to ``bench/results/dataset.jsonl``.

- ``labels``: a 200-image detect and segment dataset (same seed) checked against an independent ray-cast id
  render (``tests/dataset_raycast.py``): worst box IoU, worst polygon area error, tie pixels (issue 17 (a)).
- ``speed``: images/s of the whole pipeline (scene, render, labels, effects, JPEG, files) at 640² on this device.
- ``edge``: ``--target occlusion=0.6`` and ``--target brightness=0.08`` on 50 images each: the share within ±0.05,
  the steps taken, and how often plain random sampling lands in the same band (issue 17 (d)).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dataset_assets import write_assets  # noqa: E402

from text3d.dataset.assets import load_assets  # noqa: E402
from text3d.dataset.build import build_dataset, make_image  # noqa: E402
from text3d.dataset.config import DatasetConfig, EffectsConfig, SceneConfig, SearchConfig  # noqa: E402
from text3d.dataset.edge_cases import luminance, parse_targets, pick_subject  # noqa: E402
from text3d.dataset.scene import render_scene, sample_scene  # noqa: E402


def record(entry: dict) -> None:
    entry = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "host": platform.machine(),
        "threads": torch.get_num_threads(),
        **entry,
    }
    print(json.dumps(entry))
    with open(ROOT / "bench" / "results" / "dataset.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def labels(args, tmp: Path) -> None:
    from dataset_raycast import check_yolo_labels

    assets = write_assets(tmp / "assets")
    scene = SceneConfig(objects=(2, 5), distractors=(0, 2), depth=(2.5, 4.5), screen_extent=1.15)
    cfg = DatasetConfig(images=args.images, size=args.size, val=0.2, seed=17, scene=scene)
    t0 = time.perf_counter()
    det = build_dataset(list(assets.values()), tmp / "det", cfg)
    seg = build_dataset(list(assets.values()), tmp / "seg", dataclasses.replace(cfg, format="yolo-seg"))
    made = time.perf_counter() - t0
    stats = check_yolo_labels(det.out, seg.out, cfg.labels.min_visible_pixels, exact_from=args.exact_from)
    record({"bench": "labels", "images": args.images, "size": args.size, "exact_from_pixels": args.exact_from,
            "make_s": round(made, 1), **stats})  # fmt: skip


def speed(args, tmp: Path) -> None:
    assets = write_assets(tmp / "assets")
    out = {}
    for fmt in ("yolo", "yolo-seg"):
        cfg = DatasetConfig(images=args.images, size=640, seed=1, format=fmt, device=args.device)
        res = build_dataset(list(assets.values()), tmp / fmt, cfg)
        out[fmt] = round(res.images_per_second, 2)
    record({"bench": "speed", "size": 640, "images": args.images, "device": args.device, "images_per_s": out})


def _band_rate(values: list[float], goal: float, tol: float = 0.05) -> float:
    return float(np.mean([abs(v - goal) <= tol for v in values])) if values else 0.0


def edge(args, tmp: Path) -> None:
    assets = write_assets(tmp / "assets")
    meshes, names = load_assets(list(assets.values()))
    clean = EffectsConfig(noise=(0.0, 0.0), blur_probability=0.0)
    result: dict = {"bench": "edge", "images": args.images, "size": args.size}
    for goal_text in ("occlusion=0.6", "brightness=0.08"):
        name, goal = goal_text.split("=")[0], float(goal_text.split("=")[1])
        cfg = DatasetConfig(images=args.images, size=args.size, seed=23, effects=clean,
                            search=SearchConfig(targets=(goal_text,)))  # fmt: skip
        targets = parse_targets(cfg.search.targets)
        t0 = time.perf_counter()
        achieved, steps, starts = [], [], []
        for i in range(args.images):
            s = make_image(i, cfg, meshes, names, targets).meta["search"]
            achieved.append(s["achieved"][name] if "achieved" in s else float("nan"))
            steps.append(s["steps"])
            starts.append(s.get("starts", 0))
        seconds = time.perf_counter() - t0
        # Plain random sampling: the same scenes without the search, measured the same way on the same subject.
        random_values = []
        for i in range(args.random):
            rng = np.random.default_rng([cfg.seed + 1, i])
            scene = sample_scene(rng, cfg, meshes, names, [])
            subject = pick_subject(scene, args.size, "cpu")
            if subject is None:
                random_values.append(float("nan"))
                continue
            with torch.no_grad():
                r = render_scene(scene, args.size, None, "cpu", antialias=False)
                if name == "occlusion":
                    alone = render_scene(scene, args.size, None, "cpu", antialias=False, only=[subject])
                    full = int((alone.object_id == subject).sum())
                    random_values.append(1.0 - int((r.object_id == subject).sum()) / full)
                else:
                    random_values.append(float(luminance(r, subject)))
        result[name] = {
            "goal": goal,
            "within_0.05": _band_rate(achieved, goal),
            "max_steps": max(steps),
            "mean_steps": float(np.mean(steps)),
            "restarted": int(sum(s > 1 for s in starts)),
            "seconds_per_image": round(seconds / args.images, 2),
            "random_sampling_within_0.05": _band_rate(random_values, goal),
            "random_samples": args.random,
        }
    record(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("labels", "speed", "edge"))
    p.add_argument("--images", type=int)
    p.add_argument("--size", type=int)
    p.add_argument(
        "--exact-from", type=int, default=100, help="labels: objects this big get the IoU/area bounds"
    )
    p.add_argument("--random", type=int, default=500, help="edge: random scenes for the baseline")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    defaults = {"labels": (200, 256), "speed": (20, 640), "edge": (50, 128)}[args.part]
    args.images = args.images or defaults[0]
    args.size = args.size or defaults[1]
    with tempfile.TemporaryDirectory() as tmp:
        {"labels": labels, "speed": speed, "edge": edge}[args.part](args, Path(tmp))


if __name__ == "__main__":
    main()
