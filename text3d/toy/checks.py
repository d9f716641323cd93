"""Measurements of a toy model: does its VAE keep hue, and do its samples show what their captions say?

Both are judged against the world's own renders (ground truth the model did not compute): the VAE by the hue of
each object's mean colour before and after a round trip, the samples by the label of their nearest reference
render.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.toy.world import (
    COLOUR_NAMES,
    COLOURS,
    CRATE,
    MODES,
    SHAPES,
    ToyDataset,
    ToyWorldConfig,
    make_dataset,
)


def _hue_deg(rgb: Tensor) -> Tensor:
    return torch.tensor([colorsys.rgb_to_hsv(*c)[0] * 360.0 for c in rgb.tolist()])


def _coloured_primitives(data: ToyDataset) -> Tensor:
    """``[N]`` bool: the albedo and lambertian images of the primitives (textureless ones carry no colour; a
    crate has two colours and one colour label)."""
    return (data.mode_ids != MODES.index(MODES[2])) & (data.shape_ids < len(SHAPES))


@dataclass
class HueReport:
    """VAE round trip on coloured (albedo and lambertian) renders.

    Attributes:
        mean_error_deg, p95_error_deg: hue error of each object's mean colour (circular degrees).
        kept: share of objects whose reconstructed mean colour is still nearest (in hue) to their palette colour.
        n: objects measured.
    """

    mean_error_deg: float
    p95_error_deg: float
    kept: float
    n: int


@torch.no_grad()
def measure_hue(vae, data: ToyDataset, max_images: int = 512) -> HueReport:
    """Hue kept by ``vae`` (decode of the posterior mean) on the coloured images of the primitives in ``data``."""
    coloured = _coloured_primitives(data) & (data.masks.flatten(1).sum(1) > 20)
    idx = torch.nonzero(coloured)[:max_images, 0]
    x = data.images[idx]
    recon = torch.cat(
        [
            vae.decode(vae.encode(x[i : i + 128] * 2 - 1).latent_dist.mean).sample
            for i in range(0, len(x), 128)
        ]
    )
    recon = ((recon + 1) / 2).clamp(0, 1)
    m = (data.masks[idx] > 0.99).float()[:, None]
    mean_true = (x * m).sum((2, 3)) / m.sum((2, 3))
    mean_rec = (recon * m).sum((2, 3)) / m.sum((2, 3))
    h_true, h_rec = _hue_deg(mean_true), _hue_deg(mean_rec)
    err = (h_true - h_rec).abs()
    err = torch.minimum(err, 360 - err)
    palette_h = _hue_deg(torch.tensor(list(COLOURS.values())))
    d = (h_rec[:, None] - palette_h[None]).abs()
    d = torch.minimum(d, 360 - d)
    kept = (d.argmin(1) == data.colour_ids[idx]).float().mean().item()
    return HueReport(err.mean().item(), err.quantile(0.95).item(), kept, len(idx))


@torch.no_grad()
def sample_images(
    parts: dict,
    prompts: list[str],
    steps: int = 25,
    guidance_scale: float = 5.0,
    seed: int = 0,
    negative_prompt: str = "",
) -> Float[Tensor, "N 3 S S"]:
    """DDIM samples in [0, 1], one per prompt, with classifier-free guidance (text3d's uncond: the negative
    prompt, "" by default)."""
    from diffusers import DDIMScheduler

    tok, te, unet, vae = parts["tokenizer"], parts["text_encoder"], parts["unet"], parts["vae"]
    sched = DDIMScheduler.from_config(parts["scheduler"].config)
    sched.set_timesteps(steps)
    ids = tok(
        [*prompts, negative_prompt],
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    emb = te(ids)[0]
    cond, uncond = emb[:-1], emb[-1:].expand(len(prompts), -1, -1)
    n, size = len(prompts), int(unet.config.sample_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, int(unet.config.in_channels), size, size, generator=gen) * sched.init_noise_sigma
    both = torch.cat([cond, uncond])
    for t in sched.timesteps:
        eps = unet(torch.cat([x, x]), t, encoder_hidden_states=both).sample
        e_c, e_u = eps.chunk(2)
        x = sched.step(e_u + guidance_scale * (e_c - e_u), t, x).prev_sample
    img = vae.decode(x / vae.config.scaling_factor).sample
    return ((img + 1) / 2).clamp(0, 1)


def reference_set(n_images: int = 2048, seed: int = 12345) -> ToyDataset:
    """Coloured renders (albedo and lambertian) of the primitives that samples are labelled against: a seed the
    trainer never uses, so the reference images are not the training images. Crates are left out: seen from the
    back, a crate is a blue cube."""
    cfg = ToyWorldConfig(n_images=n_images)
    data = make_dataset(cfg, seed=seed)
    keep = _coloured_primitives(data)
    idx = torch.nonzero(keep)[:, 0]
    return ToyDataset(
        images=data.images[idx],
        masks=data.masks[idx],
        shape_ids=data.shape_ids[idx],
        colour_ids=data.colour_ids[idx],
        mode_ids=data.mode_ids[idx],
        view_ids=data.view_ids[idx],
        view_captions=[data.view_captions[i] for i in idx.tolist()],
        plain_captions=[data.plain_captions[i] for i in idx.tolist()],
    )


def nearest_labels(images: Float[Tensor, "N 3 S S"], ref: ToyDataset) -> tuple[Tensor, Tensor]:
    """(shape ids, colour ids) of each image's nearest reference render (L2 in pixels)."""
    d = torch.cdist(images.flatten(1), ref.images.flatten(1))
    j = d.argmin(1)
    return ref.shape_ids[j], ref.colour_ids[j]


@dataclass
class SampleCheck:
    """Share of samples whose nearest reference render has the caption's shape / colour."""

    shape_acc: float
    colour_acc: float
    n: int
    misses: list[str]


def sample_check(
    parts: dict, ref: ToyDataset, seeds: tuple[int, ...] = (0,), steps: int = 25, guidance_scale: float = 5.0
) -> SampleCheck:
    """One DDIM sample per (shape, colour) caption and seed, labelled by its nearest reference render."""
    pairs = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOUR_NAMES))]
    prompts = [f"a {COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in pairs]
    shape_ok, colour_ok, misses = 0, 0, []
    for seed in seeds:
        imgs = sample_images(parts, prompts, steps, guidance_scale, seed)
        s_hat, c_hat = nearest_labels(imgs, ref)
        for k, (s, c) in enumerate(pairs):
            shape_ok += int(s_hat[k] == s)
            colour_ok += int(c_hat[k] == c)
            if s_hat[k] != s or c_hat[k] != c:
                misses.append(f"{prompts[k]} -> {COLOUR_NAMES[c_hat[k]]} {SHAPES[s_hat[k]]}")
    n = len(pairs) * len(seeds)
    return SampleCheck(shape_ok / n, colour_ok / n, n, misses)


def crate_view_check(
    parts: dict,
    seeds: tuple[int, ...] = (0, 1),
    per_seed: int = 4,
    steps: int = 25,
    guidance_scale: float = 5.0,
) -> dict[str, float]:
    """Does the model know the view words? Mean yellow (front-half) share of the object pixels of DDIM samples of
    "a crate, <view> view", per view name (text3d's own wording), and of the plain caption ("plain").

    A model that learned them shows the yellow half in front views and never in back views; one that ignores
    them gives every view the same share.
    """
    from text3d.cameras import VIEW_NAMES
    from text3d.guidance.prompts import view_prompts
    from text3d.toy.semantic import front_colour_share

    base = f"a {CRATE}"
    prompts = {**dict(zip(VIEW_NAMES, view_prompts(base), strict=True)), "plain": base}
    out = {}
    for name, prompt in prompts.items():
        imgs = torch.cat([sample_images(parts, [prompt] * per_seed, steps, guidance_scale, s) for s in seeds])
        rgb = imgs.permute(0, 2, 3, 1)
        mask = ((1.0 - rgb).amax(-1) > 0.25).float()  # not the white background
        out[name] = float(front_colour_share(rgb, mask).mean())
    return out


def sample_grid(
    parts: dict, steps: int = 25, guidance_scale: float = 5.0, seed: int = 0, scale: int = 2
) -> bytes:
    """A PNG of DDIM samples: one row per primitive, one column per colour, then a row for the crate with each
    of text3d's view words (front, side, back, overhead) and no view word."""
    import io

    import numpy as np
    from PIL import Image

    from text3d.guidance.prompts import view_prompts

    rows = [[f"a {c} {s}" for c in COLOUR_NAMES] for s in SHAPES]
    crate = [*view_prompts(f"a {CRATE}"), f"a {CRATE}"]
    rows.append((crate + [f"a {CRATE}"] * len(COLOUR_NAMES))[: len(COLOUR_NAMES)])  # as wide as the others
    imgs = sample_images(parts, [p for row in rows for p in row], steps, guidance_scale, seed)
    n_rows, n_cols = len(rows), len(COLOUR_NAMES)
    size = imgs.shape[-1]
    grid = imgs.view(n_rows, n_cols, 3, size, size).permute(0, 3, 1, 4, 2).reshape(n_rows * size, -1, 3)
    img = Image.fromarray((grid.numpy() * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
