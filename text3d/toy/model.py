"""The toy Stable Diffusion's architecture, and writing/reading it as a standard diffusers folder.

A 4x VAE (32² images <-> 4x8x8 latents) whose GroupNorms have 4 to 16 channels per group: with one channel per
group the norm removes each channel's spatial mean, which is where a flat-coloured image keeps its hue, and an
earlier experiment's VAE came out hue-blind. A 2-level UNet (~0.8 M parameters) with cross-attention, a 2-layer
CLIP text encoder and a generated BPE vocabulary in which every word of the world is one token. The scheduler is
SD's (scaled-linear betas, 1000 steps, epsilon prediction), so the sampling and SDS code paths are SD's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from text3d.guidance.random_models import write_tiny_tokenizer
from text3d.guidance.stable_diffusion import TOY_MODEL_DIR
from text3d.toy.world import world_words

DEFAULT_MODEL_DIR = TOY_MODEL_DIR
"""The committed, trained toy model (``text3d toy-model train`` rebuilds it; ``--model toy`` names it)."""

TEXT_DIM = 64
PART_NAMES = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def build_vae(norm_num_groups: int = 4):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=norm_num_groups,
        sample_size=32,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def build_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(Path(folder), world_words())
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(cfg)


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def save_folder(folder: Path, parts: dict, note: str) -> Path:
    """Write the parts in diffusers layout, plus a ``model_index.json`` that diffusers'
    ``StableDiffusionPipeline`` accepts (no safety checker)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        parts[name].save_pretrained(folder / name)
    parts["tokenizer"].save_pretrained(folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "_text3d_note": note,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def load_parts(folder: Path | str = DEFAULT_MODEL_DIR, dtype: torch.dtype = torch.float32) -> dict:
    """The five parts of a toy (or any small SD) folder, fp32 on CPU, in eval mode."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = str(folder)
    parts = {
        "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype),
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype),
        "scheduler": DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
    }
    for name in ("text_encoder", "unet", "vae"):
        parts[name].eval().requires_grad_(False)
    return parts
