"""Does a detector learn from ``text3d dataset`` output? Train Ultralytics YOLO on it, then on the same images with
labels shifted by 10 % of each box's size, and compare mAP on the correct validation labels (issue 17 (c)).

3 classes (ring, cone, capsule: ``tests/dataset_assets.py``), 300 train / 100 val images at 320², a YOLO model built
from its YAML (``YOLO("yolo26n.yaml")``: no downloaded weights), ``amp=False``, ``plots=False``, CPU, a fixed number
of epochs. Ultralytics runs in the second venv (``.venv-yolo``, see ``.ci/run``), offline, in a subprocess.

    PYTHONPATH=. python bench/yolo_bench.py [--epochs 30] [--size 320] [--parallel] [--keep DIR]

Prints and appends one JSON line to ``bench/results/dataset.jsonl``: mAP50 and mAP50-95 of both runs, and the time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
PYTHON = ROOT / ".venv-yolo" / "bin" / "python"

TRAIN = r"""
import json, sys, time
from ultralytics import YOLO
data, project, name, epochs, imgsz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t0 = time.time()
model = YOLO("yolo26n.yaml")
model.train(data=data, epochs=epochs, imgsz=imgsz, batch=16, device="cpu", amp=False, plots=False, workers=0,
            seed=0, deterministic=True, project=project, name=name, exist_ok=True, verbose=False)
train_s = time.time() - t0
m = model.val(data=data, imgsz=imgsz, batch=16, device="cpu", plots=False, workers=0, project=project,
              name=name + "-val", exist_ok=True, verbose=False)
print("RESULT " + json.dumps({"map50": float(m.box.map50), "map50_95": float(m.box.map), "train_s": train_s}))
"""


def shifted_copy(src: Path, dst: Path, fraction: float = 0.1) -> Path:
    """The dataset with every *train* box moved right and down by ``fraction`` of its width and height."""
    shutil.copytree(src, dst)
    for label in (dst / "labels" / "train").glob("*.txt"):
        rows = []
        for line in label.read_text().splitlines():
            c, xc, yc, w, h = line.split()
            xc_s = min(max(float(xc) + fraction * float(w), 0.0), 1.0)
            yc_s = min(max(float(yc) + fraction * float(h), 0.0), 1.0)
            rows.append(f"{c} {xc_s:.6f} {yc_s:.6f} {w} {h}")
        label.write_text("".join(r + "\n" for r in rows))
    data = (dst / "data.yaml").read_text().replace(f"path: {src}", f"path: {dst}")
    (dst / "data.yaml").write_text(data)
    for cache in dst.rglob("*.cache"):
        cache.unlink()
    return dst


def train(
    data_yaml: Path, work: Path, name: str, epochs: int, imgsz: int, threads: int | None = None
) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "yolo-config")}
    env.pop("PYTHONPATH", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [str(PYTHON), "-c", TRAIN, str(data_yaml), str(work / "runs"), name, str(epochs), str(imgsz)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    from dataset_assets import write_assets

    from text3d.dataset.build import build_dataset
    from text3d.dataset.config import DatasetConfig, SceneConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--keep", type=Path, help="keep the datasets and runs here")
    p.add_argument(
        "--parallel",
        action="store_true",
        help="train both runs at once, one thread each (on 2 cores: about half the wall time of one after the other)",
    )
    args = p.parse_args()
    if not PYTHON.exists():
        raise SystemExit(f"no Ultralytics venv at {PYTHON.parent.parent}; see .ci/run")
    work = Path(args.keep or tempfile.mkdtemp(prefix="yolo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    assets = write_assets(work / "assets")
    n = args.train + args.val
    cfg = DatasetConfig(images=n, size=args.size, val=args.val / n, seed=0, scene=SceneConfig(objects=(1, 3)))
    t0 = time.perf_counter()
    ds = build_dataset(list(assets.values()), work / "exact", cfg, overwrite=True)
    make_s = time.perf_counter() - t0
    bad = shifted_copy(ds.out, work / "shifted")
    runs = {"exact": ds.out / "data.yaml", "shifted": bad / "data.yaml"}
    if args.parallel:
        with ThreadPoolExecutor(len(runs)) as pool:
            jobs = {k: pool.submit(train, v, work, k, args.epochs, args.size, 1) for k, v in runs.items()}
            exact, shifted = jobs["exact"].result(), jobs["shifted"].result()
    else:
        exact, shifted = (train(v, work, k, args.epochs, args.size) for k, v in runs.items())
    entry = {
        "bench": "yolo", "date": time.strftime("%Y-%m-%d %H:%M"), "model": "yolo26n.yaml (from scratch)",
        "train": args.train, "val": args.val, "size": args.size, "epochs": args.epochs, "device": "cpu",
        "dataset_s": round(make_s, 1), "parallel": args.parallel, "exact": exact, "shifted_10pct": shifted,
    }  # fmt: skip
    print(json.dumps(entry))
    with open(ROOT / "bench" / "results" / "dataset.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
