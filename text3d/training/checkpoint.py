"""Checkpoints: one safetensors file per stage, written atomically, holding every tensor of the stage's
``state_dict()`` (representation, view source, shader, objective), Adam's state, the RNG states and, in its
metadata, the step and Adam's scalars. A run killed after a checkpoint and resumed reaches bit-identical parameters
on CPU, because every random draw comes from the torch RNG whose state is saved here.

What a finished run keeps is smaller (issue 12, disk): a stage's last checkpoint is written without Adam's state
(``optimizer=None``; continuing that stage later starts Adam's moments afresh), and once the next stage has
finished, :func:`prune_checkpoint` leaves only the step of the earlier one, whose weights live on, trained further,
in the later stage (it was only their starting point).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from text3d.io import atomic_path
from text3d.training.stage import Stage

PARTS = ("representation.", "views.", "shader.", "objective.")
"""Prefixes of a stage's state-dict keys. Checkpoints written before stages had parts hold the representation's
keys without a prefix; they are read as the representation's."""


def device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def checkpoint_path(run_dir: str | Path, stage_name: str) -> Path:
    """Where a run keeps a stage's checkpoint: ``<run>/checkpoints/<stage>.safetensors``."""
    return Path(run_dir) / "checkpoints" / f"{stage_name}.safetensors"


def save_checkpoint(
    path: Path, stage: Stage, optimizer: torch.optim.Optimizer | None, step: int, extra: dict
) -> Path:
    """One file: ``model.*`` tensors, ``optim.<param>.<key>`` Adam state (none when ``optimizer`` is ``None``),
    ``rng.*`` states; JSON in metadata."""
    tensors: dict[str, Tensor] = {
        f"model.{k}": v.detach().contiguous() for k, v in stage.state_dict().items()
    }
    opt_state = optimizer.state_dict() if optimizer is not None else {"state": {}, "param_groups": []}
    scalars: dict[str, dict] = {}
    for pid, state in opt_state["state"].items():
        for key, val in state.items():
            if isinstance(val, Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tensors = {k: v.cpu() for k, v in tensors.items()}
    meta = {
        "step": str(step),
        "stage": stage.name,
        "param_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "extra": json.dumps(extra),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def prune_checkpoint(path: Path) -> None:
    """Rewrite a finished stage's checkpoint with its step, stage name and extras only (a few hundred bytes).

    For a stage that a later, finished stage started from: the later stage's checkpoint holds everything needed to
    rebuild, export or continue it, so the earlier weights are never read again (see :func:`is_pruned`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if meta.get("pruned") == "true":
        return
    meta = {k: meta[k] for k in ("step", "stage", "extra") if k in meta} | {"pruned": "true"}
    with atomic_path(path) as tmp:
        save_file({}, str(tmp), metadata=meta)


def is_pruned(path: Path) -> bool:
    """Whether a checkpoint was pruned (:func:`prune_checkpoint`): it says the stage finished, and nothing more."""
    return read_checkpoint_meta(path)["pruned"]


def read_checkpoint_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {
        "step": int(meta.get("step", -1)),
        "stage": meta.get("stage"),
        "extra": json.loads(meta.get("extra", "{}")),
        "pruned": meta.get("pruned") == "true",
    }


def load_checkpoint(path: Path, stage: Stage, optimizer: torch.optim.Optimizer | None) -> int:
    """Restore parameters, Adam state and RNG state; returns the step the checkpoint was taken after.

    A stage's last checkpoint has no Adam state: the optimizer is then left as it is (fresh moments). A pruned
    checkpoint restores nothing but the step (the stage is finished and superseded; see :func:`prune_checkpoint`).
    """
    from safetensors import safe_open

    device = device_of(stage)
    tensors = load_file(str(path), device="cpu")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("pruned") == "true":
        return int(meta["step"])
    stage.load_state_dict(model_state(tensors))
    if optimizer is not None and any(k.startswith("optim.") for k in tensors):
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v.to(device) if key != "step" else v
        for pid, vals in json.loads(meta.get("optim_scalars", "{}")).items():
            state.setdefault(int(pid), {}).update(vals)
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(16) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return int(meta["step"])


def model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The stage's ``state_dict()`` from a checkpoint's tensors (older unprefixed keys are the representation's)."""
    out = {}
    for key, value in tensors.items():
        if key.startswith("model."):
            name = key[len("model.") :]
            out[name if name.startswith(PARTS) else f"representation.{name}"] = value
    return out


def load_weights(stage: Stage, path: Path) -> None:
    """Parameters and buffers of ``stage`` from its checkpoint (no optimizer or RNG state: nothing trains); a pruned
    checkpoint has none to give, and leaves the stage as it is."""
    if not is_pruned(path):
        stage.load_state_dict(model_state(load_file(str(path), device="cpu")))
