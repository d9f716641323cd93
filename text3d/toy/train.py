"""Train the toy Stable Diffusion: render the world, train the VAE (and check it keeps hue), then the UNet and the
text encoder together on the VAE's latents, and write a diffusers folder with its recipe.

Deterministic on CPU: every random draw comes from generators seeded from ``seed``, and torch runs with
deterministic algorithms, so the same seed, step counts, torch version and thread count give the same weights.
``minutes`` is a hard cap: a run that reaches it stops early, saves what it has and says so in ``recipe.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from text3d.toy.checks import measure_hue
from text3d.toy.model import (
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    save_folder,
)
from text3d.toy.world import ToyDataset, ToyWorldConfig, make_dataset


@dataclass(frozen=True)
class ToyTrainConfig:
    seed: int = 0
    world: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    vae_steps: int = 1600
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_object_weight: float = 4.0
    """Pixel-loss weight on the object (the background weighs 1): three quarters of each image is white."""
    vae_norm_groups: int = 4
    unet_steps: int = 4096
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    p_empty: float = 0.1
    """Caption dropout for classifier-free guidance: the empty caption."""
    p_plain: float = 0.3
    """The caption without its view suffix (a prompt with ``sds.view_dependent`` off)."""
    minutes: float | None = None
    min_hue_kept: float = 0.95
    """The colour check: the share of objects whose hue survives the VAE; below it the run fails."""


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _log(msg: str, log) -> None:
    if log is not None:
        log(msg)


def train_vae(cfg: ToyTrainConfig, data: ToyDataset, deadline: float, log=print):
    """Reconstruction (object-weighted MSE + L1) and a small KL, on the world's images scaled to [-1, 1]."""
    torch.manual_seed(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae = build_vae(cfg.vae_norm_groups)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    n, done = len(data), 0
    for step in range(cfg.vae_steps):
        if time.monotonic() > deadline:
            break
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr, 50)
        idx = torch.randint(n, (cfg.vae_batch,), generator=gen)
        x = data.images[idx] * 2 - 1
        w = 1.0 + (cfg.vae_object_weight - 1.0) * data.masks[idx][:, None]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        y = vae.decode(z).sample
        rec = (w * ((y - x) ** 2 + 0.1 * (y - x).abs())).mean()
        loss = rec + cfg.vae_kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if step % 100 == 0 or done == cfg.vae_steps:
            _log(f"vae {step:5d}/{cfg.vae_steps} rec {rec.item():.5f}", log)
    vae.eval().requires_grad_(False)
    return vae, done


@torch.no_grad()
def encode_dataset(vae, data: ToyDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of every image (unscaled)."""
    means, stds = [], []
    for i in range(0, len(data), 256):
        post = vae.encode(data.images[i : i + 256] * 2 - 1).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    cfg: ToyTrainConfig, data: ToyDataset, mean, std, scaling: float, tokenizer, deadline, log=print
):
    """Epsilon-prediction on sampled, scaled latents; the text encoder is trained with the UNet. Returns the EMA
    UNet, the EMA text encoder and the steps done."""
    import copy

    torch.manual_seed(cfg.seed + 2)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    unet = build_unet()
    text_encoder = build_text_encoder(tokenizer)
    sched = build_scheduler()
    abar = sched.alphas_cumprod.float()
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)

    def tokens(texts: list[str]) -> torch.Tensor:
        return tokenizer(
            texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    view_ids, plain_ids, empty_ids = tokens(data.view_captions), tokens(data.plain_captions), tokens([""])
    n, done = len(data), 0
    t0 = time.monotonic()
    for step in range(cfg.unet_steps):
        if time.monotonic() > deadline:
            break
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup)
        idx = torch.randint(n, (cfg.unet_batch,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling
        u = torch.rand(cfg.unet_batch, generator=gen)
        ids = torch.where((u < cfg.p_empty)[:, None], empty_ids, view_ids[idx])
        ids = torch.where(
            ((u >= cfg.p_empty) & (u < cfg.p_empty + cfg.p_plain))[:, None], plain_ids[idx], ids
        )
        t = torch.randint(0, len(abar), (cfg.unet_batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        emb = text_encoder(ids)[0]
        pred = unet(zt, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for e, m in zip(ema, (unet, text_encoder), strict=True):
                for pe, pm in zip(e.parameters(), m.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
        done = step + 1
        if step % 100 == 0 or done == cfg.unet_steps:
            rate = (time.monotonic() - t0) / done
            _log(f"unet {step:5d}/{cfg.unet_steps} loss {loss.item():.4f} ({rate:.2f} s/step)", log)
    return ema[0].eval(), ema[1].eval(), done


def train(out: Path, cfg: ToyTrainConfig = ToyTrainConfig(), log=print) -> dict:
    """Render, train and write the folder at ``out``; returns the recipe (also written as ``recipe.json``).

    Raises:
        RuntimeError: the VAE failed the colour check (see :attr:`ToyTrainConfig.min_hue_kept`).
    """
    out = Path(out)
    start = time.monotonic()
    deadline = start + cfg.minutes * 60 if cfg.minutes else float("inf")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(out, cfg, start, deadline, log)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(out: Path, cfg: ToyTrainConfig, start: float, deadline: float, log) -> dict:
    _log(f"rendering {cfg.world.n_images} images", log)
    data = make_dataset(cfg.world, seed=cfg.seed)
    t_data = time.monotonic() - start
    vae, vae_done = train_vae(cfg, data, deadline, log)
    hue = measure_hue(vae, make_dataset(ToyWorldConfig(n_images=512), seed=cfg.seed + 1000))
    _log(
        f"vae hue: mean error {hue.mean_error_deg:.2f} deg, p95 {hue.p95_error_deg:.2f}, kept {hue.kept:.3f}",
        log,
    )
    if hue.kept < cfg.min_hue_kept:
        raise RuntimeError(
            f"the VAE lost colour: {hue.kept:.1%} of objects kept their hue (need {cfg.min_hue_kept:.0%}); "
            "train it longer or give its GroupNorms more channels per group"
        )
    mean, std = encode_dataset(vae, data)
    scaling = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    t_vae = time.monotonic() - start - t_data
    tok_dir = out / "tokenizer"
    tokenizer = build_tokenizer(tok_dir)
    unet, text_encoder, unet_done = train_unet(cfg, data, mean, std, scaling, tokenizer, deadline, log)
    t_unet = time.monotonic() - start - t_data - t_vae
    parts = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": build_scheduler(),
    }
    save_folder(
        out, parts, note="text3d toy world model: trained on rendered primitives (text3d toy-model train)"
    )
    stopped = vae_done < cfg.vae_steps or unet_done < cfg.unet_steps
    recipe = {
        "config": asdict(cfg),
        "vae_steps_done": vae_done,
        "unet_steps_done": unet_done,
        "stopped_by_time_budget": stopped,
        "vae_scaling_factor": scaling,
        "hue": asdict(hue),
        "seconds": {"render": round(t_data, 1), "vae": round(t_vae, 1), "unet": round(t_unet, 1)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": {
            name: sum(p.numel() for p in parts[name].parameters()) for name in ("unet", "vae", "text_encoder")
        },
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str) + "\n")
    _log(f"wrote {out} ({'stopped by the time budget' if stopped else 'all steps done'})", log)
    return recipe
