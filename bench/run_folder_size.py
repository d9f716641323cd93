"""Size of a completed default-size run folder (issue 12, item 10 and acceptance i).

A coarse + refine run with the code's default field sizes (hash grid 16 levels x 2 features x 2^19, DMTet grid
128, 64 px coarse and 512 px refine renders, default previews, video and export) and only the step counts cut,
with the tiny random SD (the model's size does not enter the run folder). Prints each part's size and the total,
then checks that `text3d export` and `text3d refine` still work on the finished folder.

    OMP_NUM_THREADS=2 python bench/run_folder_size.py [--coarse-steps 4] [--refine-steps 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from text3d.cli import main as cli
from text3d.config import GenerateConfig, apply_overrides
from text3d.guidance.random_models import save_random_sd
from text3d.pipeline import generate


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coarse-steps", type=int, default=4)
    ap.add_argument("--refine-steps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_random_sd(work / "tiny-sd", size="tiny", seed=0)
        cfg = apply_overrides(
            GenerateConfig(prompt="a ceramic owl mug"),
            {
                "model.model_id": str(model),
                "out_dir": str(work / "outputs"),
                "device": "cpu",
                "coarse.steps": str(args.coarse_steps),
                "refine.steps": str(args.refine_steps),
                "trainer.progress_bar": "false",
            },
        )
        t0 = time.perf_counter()
        run = generate(cfg).run_dir
        print(f"run took {time.perf_counter() - t0:.0f} s")
        for part in sorted(p for p in run.iterdir()):
            size = folder_mb(part) if part.is_dir() else part.stat().st_size / 1e6
            print(f"  {part.name:<16} {size:8.2f} MB")
        for ckpt in sorted((run / "checkpoints").glob("*.safetensors")):
            print(f"    {ckpt.name:<22} {ckpt.stat().st_size / 1e6:8.2f} MB")
        total = folder_mb(run)
        print(
            f"completed run folder: {total:.1f} MB ({'within' if total <= 100 else 'OVER'} the 100 MB target)"
        )
        assert cli(["export", str(run), "--format", "glb"]) == 0, "text3d export failed"
        steps = str(args.refine_steps + 1)
        assert cli(["refine", str(run), "--refine-steps", steps]) == 0, "text3d refine failed"
        print(
            f"text3d export and text3d refine --refine-steps {steps} work on it; now {folder_mb(run):.1f} MB"
        )


if __name__ == "__main__":
    main()
