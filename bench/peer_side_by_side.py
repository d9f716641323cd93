"""Side by side with stable-dreamfusion: seconds per coarse training step of its pure-PyTorch ``--backbone vanilla``
path and of text3d, on the same machine, the same tiny random SD folder, 64² renders, batch 1, fp32, the same
threads; prints the per-step ratio text3d / peer (issue 19 (a)).

The peer is cloned at run time into a git-ignored folder (``.peer/``, never committed) and run through its own
``main.py`` in a subprocess; the harness only times the interval between successive calls of its
``Trainer.train_step`` (render + SDS + backward + optimizer + data, what one iteration costs) and stops after the
timed steps. Modules the peer imports at the top of its files but never calls on this path (CUDA ray marching,
nvdiffrast, mesh export, image I/O, GUI) are replaced by stubs that raise if called; logging and EMA
(tensorboardX, torch_ema) by no-op stubs when they are not installed. The stubs used are printed.

Modes (each a pair of runs; per step: the mean over ``--steps`` after ``--warmup``, best of ``--repeats``):

- ``albedo-matched``: no occupancy grid, 96 samples per ray (the peer's 64 + 32 upsampled), SDS on images of the
  same size on both sides (``--sds-size``, see :data:`PEER_SDS_SIZE`), albedo steps;
- ``shaded-matched``: the same with shaded steps (normals needed: the peer's autograd normals; text3d's
  ``coarse.nerf.normals``, finite differences by default, ``--text3d-normals analytic`` for the other);
- ``defaults``: each project's own defaults (text3d: occupancy grid, 64 samples, albedo steps first).

Usage::

    python bench/peer_side_by_side.py                     # clones github.com/ashawkey/stable-dreamfusion
    python bench/peer_side_by_side.py --peer-url /path/to/a/clone --steps 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_URL = "https://github.com/ashawkey/stable-dreamfusion"
PEER_DIR = ROOT / ".peer" / "stable-dreamfusion"

RAISING_STUBS = (
    "raymarching",
    "nvdiffrast",
    "nvdiffrast.torch",
    "mcubes",
    "pymeshlab",
    "cv2",
    "torchmetrics",
    "torchvision",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.utils",
    "dearpygui",
    "dearpygui.dearpygui",
)
"""Imported at the top of the peer's modules, used only off the measured path (CUDA rays, mesh export, images)."""
NOOP_STUBS = ("tensorboardX", "torch_ema", "matplotlib", "matplotlib.pyplot")
"""Logging and the EMA of the weights: stubbed as no-ops when not installed (the EMA of 19k weights is ~0 ms)."""

# Runs inside the peer's subprocess: stubs, a timer around Trainer.train_step, then the peer's main.py.
PEER_HARNESS = r"""
import importlib, json, os, runpy, sys, time, types
peer, n_calls, raising, noop = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4].split(",")
sys.path.insert(0, peer)
os.chdir(peer)

class _Raise:
    def __init__(self, name): self._name = name
    def __call__(self, *a, **k): raise RuntimeError(f"stub {self._name} called: not on the measured path")
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Raise(f"{self._name}.{attr}")

class _Noop:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return _Noop()
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Noop()

def _attr(name, kind):
    def get(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Raise(f"{name}.{attr}") if kind is _Raise else _Noop
    return get

# The libraries' own availability probes run before any stub exists.
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

used = []
for names, kind in ((raising, _Raise), (noop, _Noop)):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            mod = types.ModuleType(name)
            mod.__getattr__ = _attr(name, kind)
            mod.__path__ = []
            sys.modules[name] = mod
            used.append(name)

import nerf.utils as U

sds_size = int(os.environ.get("PEER_SDS_SIZE", "512"))
if sds_size != 512:  # the peer hard-codes 512² before its VAE; resize to the matched size instead
    import torch.nn.functional as F
    _interpolate = F.interpolate
    def _resized(x, size=None, *a, **k):
        if size == (512, 512):
            size = (sds_size, sds_size)
        return _interpolate(x, size, *a, **k)
    F.interpolate = _resized
    used.append(f"512->{sds_size} resize")

starts = []
original = U.Trainer.train_step

class Done(Exception):
    pass

def timed(self, *a, **k):
    starts.append(time.perf_counter())
    if len(starts) > n_calls:
        raise Done
    return original(self, *a, **k)

U.Trainer.train_step = timed
sys.argv = ["main.py"] + sys.argv[5:]
try:
    runpy.run_path("main.py", run_name="__main__")
except Done:
    pass
steps = [b - a for a, b in zip(starts, starts[1:])]
print("PEER-RESULT " + json.dumps({"step_s": steps, "stubs": used}))
"""


MODEL_SDS_SIZE = 32
"""The tiny model's own image size (16² latents), where text3d runs SDS by default."""
PEER_SDS_SIZE = 512
"""The peer resizes every render to 512² before its VAE (``guidance/sd_utils.py``, whatever the model), so the tiny
model's UNet (2x VAE) sees 256² latents there, with self-attention over 65,536 tokens: a step then costs about a
minute on either side and the field is lost in it. The matched modes run both sides at ``--sds-size``: the model's
own 32² by default (the peer's ``F.interpolate(..., (512, 512))`` is redirected to 32² in its process, the only
change made to its code path; printed with the stubs), or 512² (``text3d bench --sds-size 512``, the peer
untouched). ``defaults`` keeps each one's own (peer 512², text3d 32²)."""


def fetch_peer(url: str, folder: Path) -> Path:
    if not (folder / "main.py").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--depth", "1", url, str(folder)], check=True)
    return folder


def ensure_ignored(folder: Path) -> None:
    """The peer's code must never be committed: refuse to run if git would see it."""
    out = subprocess.run(["git", "check-ignore", "-q", str(folder)], cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{folder} is not git-ignored; add '.peer/' to .gitignore first")


def run_peer(
    peer: Path, sd: Path, mode: str, warmup: int, steps: int, env: dict, work: Path, sds_size: int
) -> list[float]:
    args = ["--text", "a hamburger", "--backbone", "vanilla", "--h", "64", "--w", "64", "--hf_key", str(sd)]
    args += ["--workspace", str(work / f"peer-{mode}"), "--seed", "0", "--iters", "10000"]
    args += [
        "--dataset_size_train",
        str(warmup + steps + 2),
        "--eval_interval",
        "1000",
        "--test_interval",
        "1000",
    ]
    if mode in ("albedo-matched", "shaded-matched"):
        args += ["--num_steps", "64", "--upsample_steps", "32", "--latent_iter_ratio", "0"]
        args += ["--albedo_iter_ratio", "1" if mode == "albedo-matched" else "0"]
    cmd = [sys.executable, "-c", PEER_HARNESS, str(peer), str(warmup + steps), ",".join(RAISING_STUBS)]
    cmd += [",".join(NOOP_STUBS)] + args
    matched = mode in ("albedo-matched", "shaded-matched")
    env = dict(env, PEER_SDS_SIZE=str(sds_size if matched else PEER_SDS_SIZE))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("PEER-RESULT ")]
    if not lines:
        raise RuntimeError(f"the peer did not run ({mode}):\n{(out.stdout + out.stderr)[-3000:]}")
    res = json.loads(lines[-1][len("PEER-RESULT ") :])
    print(f"  peer stubs: {', '.join(res['stubs']) or 'none'}", file=sys.stderr)
    timed = res["step_s"][warmup:]
    return [sum(timed) / len(timed)]  # mean, as text3d bench's it/s


def run_text3d(
    mode: str, warmup: int, steps: int, env: dict, work: Path, normals: str, sds_size: int
) -> list[float]:
    sets = ["coarse.resolution=64", f"coarse.nerf.normals={normals}"]
    if mode in ("albedo-matched", "shaded-matched"):
        sets += ["coarse.renderer.n_samples=96", "coarse.occupancy.enabled=false"]
        sets += [f"coarse.shading.albedo_only_steps={100000 if mode == 'albedo-matched' else 0}"]
    out_dir = work / f"text3d-{mode}"
    cmd = [sys.executable, "-m", "text3d", "bench", "--size", "tiny", "--stages", "coarse", "--device", "cpu"]
    cmd += ["--steps", str(steps), "--warmup", str(warmup), "--out", str(out_dir)]
    if mode in ("albedo-matched", "shaded-matched"):
        cmd += ["--sds-size", str(sds_size)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, env=dict(env, PYTHONPATH=str(ROOT)), cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"text3d bench failed ({mode}):\n{(out.stdout + out.stderr)[-3000:]}")
    records = json.loads(next(out_dir.glob("*.json")).read_text())
    return [1.0 / records[-1]["it_per_s"]]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer-url", default=PEER_URL)
    p.add_argument("--peer-dir", type=Path, default=PEER_DIR)
    p.add_argument("--modes", default="albedo-matched,shaded-matched,defaults")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--text3d-normals", default="finite_difference", choices=("finite_difference", "analytic"))
    p.add_argument(
        "--sds-size",
        type=int,
        default=MODEL_SDS_SIZE,
        choices=(MODEL_SDS_SIZE, PEER_SDS_SIZE),
        help="image size SDS runs at in the matched modes, on both sides",
    )
    args = p.parse_args(argv)
    ensure_ignored(args.peer_dir)
    peer = fetch_peer(args.peer_url, args.peer_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["CUDA_VISIBLE_DEVICES"] = ""  # both on the CPU
    sys.path.insert(0, str(ROOT))
    from text3d.guidance.random_models import save_random_sd

    rows = []
    with tempfile.TemporaryDirectory(prefix="text3d-peer-") as tmp:
        work = Path(tmp)
        sd = save_random_sd(work / "tiny-sd", size="tiny", seed=0)
        for mode in args.modes.split(","):
            best_peer = best_ours = float("inf")
            for _ in range(args.repeats):  # interleaved; the best round of each counts (load only slows down)
                best_peer = min(
                    best_peer, *run_peer(peer, sd, mode, args.warmup, args.steps, env, work, args.sds_size)
                )
                best_ours = min(
                    best_ours,
                    *run_text3d(mode, args.warmup, args.steps, env, work, args.text3d_normals, args.sds_size),
                )
            rows.append((mode, best_ours, best_peer))
            print(
                f"{mode}: text3d {best_ours * 1e3:.0f} ms/step, peer {best_peer * 1e3:.0f} ms/step",
                file=sys.stderr,
            )
    print(
        f"| mode | text3d ms/step | stable-dreamfusion ms/step | ratio | ({args.threads} threads, "
        f"matched SDS at {args.sds_size}², text3d normals {args.text3d_normals})"
    )
    print("|---|---|---|---|")
    for mode, ours, theirs in rows:
        print(f"| {mode} | {ours * 1e3:.0f} | {theirs * 1e3:.0f} | {ours / theirs:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
