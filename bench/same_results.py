"""Record, or check against a record, the final parameters of fixed-seed tiny CPU runs.

Used to show that a refactor of the training core changes no result: run ``record`` on the commit before it and
``check`` after it. Each run's checkpoints are read back and every tensor (parameters, buffers, Adam state) is
hashed (sha256 of its bytes, with dtype and shape); ``check`` reports every tensor whose hash differs.

Runs (the suite's tiny settings, CPU, deterministic kernels, the tiny random SD of seed 0):
- ``coarse``: the NeRF stage alone;
- ``coarse_fine``: NeRF then DMTet;
- ``perp_neg``: both stages with a negative prompt and Perp-Neg;
- ``killed_resumed``: ``coarse_fine`` killed at coarse step 6 and at refine step 3 (each after a checkpoint
  at 4 / 2), resumed with ``text3d.pipeline.resume``; it must equal ``coarse_fine`` too.

Usage::

    python bench/same_results.py record bench/results/same-results.json
    python bench/same_results.py check bench/results/same-results.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY_OVERRIDES  # noqa: E402

from text3d.config import GenerateConfig, apply_overrides  # noqa: E402
from text3d.guidance.random_models import save_random_sd  # noqa: E402
from text3d.pipeline import generate, resume  # noqa: E402


class Killed(Exception):
    """Stands in for a SIGKILL: nothing is checkpointed on the way out."""


def tensor_hash(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def run_hashes(run_dir: Path) -> dict[str, str]:
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("*.safetensors")):
        for key, value in sorted(load_file(str(ckpt)).items()):
            if key.startswith("rng."):
                continue
            # Stages hold their parts as submodules since the trainer refactor: ``model.representation.field.*``
            # was ``model.field.*``; compare under the older name.
            key = key.replace("model.representation.", "model.", 1)
            out[f"{ckpt.stem}/{key}"] = tensor_hash(value)
    return out


def all_runs(work: Path) -> dict[str, dict[str, str]]:
    model = save_random_sd(work / "tiny-sd", size="tiny", seed=0)
    base = apply_overrides(GenerateConfig(prompt="a red apple"), TINY_OVERRIDES)
    base = apply_overrides(
        base,
        {
            "model.model_id": str(model),
            "out_dir": str(work / "outputs"),
            "export.enabled": "false",
            "refine.steps": "4",
            # the record hashes every tensor of every stage, Adam's state included: keep what a finished run
            # would drop (issue 12, disk); the default run's tensors are the same, it only writes fewer of them
            "trainer.keep_optimizer_state": "true",
            "trainer.keep_earlier_stages": "true",
        },
    )
    configs = {
        "coarse": apply_overrides(base, {"refine.steps": "0"}),
        "coarse_fine": base,
        "perp_neg": apply_overrides(base, {"negative_prompt": "a blurry photo", "perp-neg": "true"}),
    }
    results = {}
    for name, cfg in configs.items():
        results[name] = run_hashes(generate(cfg).run_dir)

    def kill_at(stage: str, step: int):
        def callback(p) -> None:
            if p.stage == stage and p.step == step and not p.message:
                raise Killed

        return callback

    run_dir = None
    try:
        generate(base, callback=kill_at("coarse", 6))
    except Killed:
        run_dir = max((work / "outputs").iterdir(), key=lambda p: p.stat().st_mtime)
    try:
        resume(run_dir, callback=kill_at("refine", 3))
    except Killed:
        pass
    resume(run_dir)
    results["killed_resumed"] = run_hashes(run_dir)
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    mode, path = argv[0], Path(argv[1])
    with tempfile.TemporaryDirectory(prefix="text3d-same-") as tmp:
        results = all_runs(Path(tmp))
    if mode == "record":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(len(v) for v in results.values())} tensor hashes in {path}")
        return 0
    recorded = json.loads(path.read_text())
    bad = 0
    for run, hashes in recorded.items():
        now = results.get(run, {})
        for key, h in hashes.items():
            if now.get(key) != h:
                bad += 1
                print(f"{run}: {key} differs ({h} recorded, {now.get(key)} now)")
        for key in sorted(set(now) - set(hashes)):
            print(f"{run}: {key} is new (not in the record)")
    same = results["killed_resumed"] == results["coarse_fine"]
    print(f"killed-and-resumed equals uninterrupted: {same}")
    total = sum(len(v) for v in recorded.values())
    print(f"{total - bad} of {total} recorded tensors bit-identical")
    return 0 if bad == 0 and same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
