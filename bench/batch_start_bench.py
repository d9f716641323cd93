"""How fast `text3d batch` starts, and how much memory it holds, as the prompt file grows (issue 12, item 3).

For each line count, a fresh `text3d batch FILE` (the tiny random SD, 4 coarse steps at 16 px, no refine stage) is
launched as a user would; the script notes the time from launch to the first `starting` line (the first prompt
begins training) and the process's peak resident memory (VmHWM) when the first prompt has completed, then kills it.

    OMP_NUM_THREADS=1 python bench/batch_start_bench.py [--lines 10 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from text3d.config import GenerateConfig, apply_overrides, save_config
from text3d.guidance.random_models import save_random_sd

TINY = {
    "coarse.nerf.encoding.n_levels": "8",
    "coarse.nerf.encoding.log2_hashmap_size": "14",
    "coarse.nerf.encoding.max_resolution": "128",
    "coarse.nerf.hidden_dim": "32",
    "coarse.renderer.n_samples": "16",
    "coarse.occupancy.resolution": "16",
    "coarse.steps": "4",
    "coarse.resolution": "16",
    "coarse.shading.albedo_only_steps": "2",
    "refine.steps": "0",
    "trainer.log_every": "1",
    "trainer.preview_every": "2",
    "trainer.checkpoint_every": "2",
    "trainer.preview_views": "1",
    "trainer.video_frames": "1",
    "trainer.progress_bar": "false",
    "export.grid_resolution": "32",
    "export.texture_size": "64",
    "export.threshold_views": "4",
    "export.threshold_resolution": "16",
    "device": "cpu",
}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(lines: int, work: Path, config: Path) -> dict:
    pfile = work / f"prompts-{lines}.txt"
    pfile.write_text(
        "".join(f"a red apple number {i} | seed={i % 5}\n" for i in range(lines)), encoding="utf-8"
    )
    out = work / f"out-{lines}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "text3d", "batch", str(pfile), "--config", str(config), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first_start = first_done = None
    rss = float("nan")
    for line in proc.stdout:
        if first_start is None and "starting" in line:
            first_start = time.perf_counter() - t0
        if "completed" in line and first_done is None:
            first_done = time.perf_counter() - t0
            rss = peak_rss_mb(proc.pid)
            break
    proc.kill()
    proc.wait()
    return {"lines": lines, "first_start_s": first_start, "first_done_s": first_done, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="+", default=[10, 20_000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_random_sd(work / "tiny-sd", size="tiny", seed=0)
        cfg = apply_overrides(GenerateConfig(), {**TINY, "model.model_id": str(model)})
        config = save_config(cfg, work / "tiny.yaml")
        for n in args.lines:
            r = measure(n, work, config)
            print(
                f"{r['lines']:>6} lines: first prompt starts {r['first_start_s']:.1f} s after launch, "
                f"first completed at {r['first_done_s']:.1f} s, peak RSS by then {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
