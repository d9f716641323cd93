"""Ultralytics reads ``text3d dataset`` output: its own dataset check and label-cache build, detect and segment.

Ultralytics needs torchvision, which cannot sit beside this project's torch, so it lives in a second virtual
environment at :data:`VENV` (``.ci/run`` creates it) and runs in a subprocess, offline, with a temporary
``YOLO_CONFIG_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from dataset_assets import write_assets  # noqa: E402

from text3d.dataset.build import build_dataset  # noqa: E402
from text3d.dataset.config import DatasetConfig, SceneConfig  # noqa: E402
from text3d.dataset.labels import merge_loops, trace_loops  # noqa: E402

VENV = Path(__file__).resolve().parent.parent / ".venv-yolo"
PYTHON = VENV / "bin" / "python"
CREATE = (
    "python -m venv .venv-yolo && .venv-yolo/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics "
    "(as .ci/run does)"
)

SCRIPT = r"""
import json, sys
import numpy as np
from pathlib import Path
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset, load_dataset_cache_file, polygon2mask

def check(task, yaml_path):
    data = check_det_dataset(yaml_path)
    report = {"names": {int(k): v for k, v in data["names"].items()}, "nc": data["nc"], "splits": {}}
    for split in ("train", "val"):
        ds = YOLODataset(img_path=data[split], data=data, task=task, imgsz=96, augment=False, cache=False)
        cache_path = Path(ds.label_files[0]).parent.with_suffix(".cache")
        nf, nm, ne, nc, n = load_dataset_cache_file(cache_path)["results"]
        fills = []
        if task == "segment":
            for lab in ds.labels:
                h, w = lab["shape"]
                for seg in lab["segments"]:
                    pts = seg * np.array([w, h])
                    x, y = pts[:, 0], pts[:, 1]
                    area = 0.5 * abs((x * np.roll(y, -1) - np.roll(x, -1) * y).sum())
                    perimeter = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1).sum()
                    filled = int(polygon2mask((h, w), [pts.reshape(-1)]).sum())
                    fills.append([float(area), float(perimeter), filled])
        report["splits"][split] = {"found": nf, "missing": nm, "empty": ne, "corrupt": nc, "total": n,
                                   "instances": int(sum(len(l["cls"]) for l in ds.labels)), "fills": fills}
    return report

jobs = json.loads(sys.argv[1])
out = {name: check(task, path) for name, (task, path) in jobs["datasets"].items()}
# A polygon with a hole, drawn the way Ultralytics draws masks for training.
poly = np.asarray(jobs["polygon"], dtype=np.float64)
out["drawn"] = polygon2mask((40, 40), [poly.reshape(-1)]).astype(int).tolist()
print("REPORT " + json.dumps(out))
"""


def _ultralytics(jobs: dict, tmp_path: Path) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(PYTHON), "-c", SCRIPT, json.dumps(jobs)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


@pytest.mark.skipif(not PYTHON.exists(), reason=f"no Ultralytics venv at {VENV}; create it with: {CREATE}")
def test_ultralytics_accepts_the_dataset(tmp_path):
    """Detect and segment datasets: 0 corrupt, 0 missing; a hole stays a hole; a broken label is caught."""
    assets = write_assets(tmp_path / "assets")
    scene = SceneConfig(objects=(0, 4), depth=(2.5, 4.5), screen_extent=1.15)
    datasets, counts = {}, {}
    for fmt, task in (("yolo", "detect"), ("yolo-seg", "segment")):
        cfg = DatasetConfig(images=16, size=96, val=0.25, seed=5, format=fmt, scene=scene)
        out = build_dataset(list(assets.values()), tmp_path / fmt, cfg).out
        labels = sorted((out / "labels").rglob("*.txt"))
        counts[task] = (
            sum(1 for p in labels if not p.read_text().strip()),
            sum(len(p.read_text().splitlines()) for p in labels),
        )
        datasets[task] = (task, str(out / "data.yaml"))
    # The same check must see a broken label (so a pass means something): a coordinate out of range.
    broken = build_dataset(
        [assets["capsule"]], tmp_path / "broken", DatasetConfig(images=4, size=64, seed=1)
    ).out
    label = next(p for p in sorted((broken / "labels" / "train").glob("*.txt")) if p.read_text().strip())
    label.write_text("0 1.5 0.5 0.2 0.2\n")
    datasets["broken"] = ("detect", str(broken / "data.yaml"))
    yy, xx = np.mgrid[0:40, 0:40] + 0.5
    r = np.hypot(xx - 20, yy - 20)
    ring = merge_loops(trace_loops((r < 15) & (r > 7)))
    report = _ultralytics({"datasets": datasets, "polygon": ring.tolist()}, tmp_path)

    drawn = np.asarray(report["drawn"], dtype=bool)
    assert not drawn[r < 5].any() and drawn[(r > 8) & (r < 14)].all()  # the hole stays a hole
    assert report["broken"]["splits"]["train"]["corrupt"] == 1
    for task in ("detect", "segment"):
        rep = report[task]
        assert rep["names"] == {"0": "ring", "1": "cone", "2": "capsule"} and rep["nc"] == 3
        splits = rep["splits"]
        print(
            task,
            json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "fills"} for k, v in splits.items()}),
        )
        assert all(s["corrupt"] == 0 and s["missing"] == 0 for s in splits.values())
        assert splits["train"]["total"] == 12 and splits["val"]["total"] == 4
        assert sum(s["found"] for s in splits.values()) == 16
        empty, rows = counts[task]
        assert (
            sum(s["empty"] for s in splits.values()) == empty >= 1
        )  # background-only images, kept unlabelled
        assert sum(s["instances"] for s in splits.values()) == rows
    # Ultralytics fills each polygon with cv2.fillPoly on pixel centres: a pixel-edge ring gains about half its
    # perimeter (a row and a column of boundary pixels), never a hole's whole area.
    fills = [f for s in report["segment"]["splits"].values() for f in s["fills"]]
    bad = [f for f in fills if not f[0] <= f[2] <= f[0] + 0.75 * f[1] + 4]
    assert fills and not bad, bad
