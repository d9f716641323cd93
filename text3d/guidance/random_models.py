"""Stable Diffusion parts with random weights, built in code: for tests, smoke runs and speed benchmarks.

Nothing here is downloaded. ``tiny`` is a few-MB model that exercises every code path on CPU in milliseconds;
``sd21-base`` is the real SD 2.1-base architecture (UNet 865M, VAE 84M, OpenCLIP-H text encoder 340M) with random
weights, which is exact for speed and memory work because cost does not depend on weight values. Outputs of either
are meaningless as images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_WORDS = ("a", "red", "apple", "blue", "vase", "view", "front", "side", "back", "overhead", "owl", "mug")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points from 256."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def write_tiny_tokenizer(folder: Path, words: tuple[str, ...] = TINY_WORDS) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of a small CLIP BPE: every byte symbol, its ``</w>`` form, and the
    merges that spell ``words`` as single tokens. Any text can be tokenized (byte fallback)."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merged = a + b
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def build_random_sd(size: str = "tiny", seed: int = 0, tokenizer_dir: Path | None = None) -> dict:
    """Return ``{unet, vae, text_encoder, tokenizer, scheduler}`` with random weights (fp32, CPU).

    Args:
        size: ``"tiny"`` or ``"sd21-base"``.
        tokenizer_dir: where the generated vocabulary is written (a temporary folder, removed once the tokenizer
            is loaded, if ``None``).
    """
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if size not in ("tiny", "sd21-base"):
        raise ValueError(f"size must be 'tiny' or 'sd21-base', got {size!r}")
    torch.manual_seed(seed)
    if tokenizer_dir is not None:
        write_tiny_tokenizer(Path(tokenizer_dir))
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    else:
        with tempfile.TemporaryDirectory(prefix="text3d-tok-") as tmp:
            write_tiny_tokenizer(Path(tmp))
            tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    vocab_size = len(tokenizer)
    special = {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    }
    if size == "tiny":
        text_cfg = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            **special,
        )
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=32,
            sample_size=32,
        )
    else:
        # SD 2.1-base (v-prediction off: the -base model predicts epsilon at 512x512).
        text_cfg = CLIPTextConfig(
            vocab_size=max(vocab_size, 49408),
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            projection_dim=512,
            hidden_act="gelu",
            **special,
        )
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=(
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
        )
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_random_taesd(size: str = "tiny", seed: int = 0):
    """An ``AutoencoderTiny`` with random weights: ``taesd`` is the real TAESD architecture (8x downsampling, as
    the SD 2.1-base VAE); ``tiny`` downsamples by 2 like the tiny VAE, so it fits the tiny UNet."""
    from diffusers import AutoencoderTiny

    if size not in ("tiny", "taesd"):
        raise ValueError(f"size must be 'tiny' or 'taesd', got {size!r}")
    torch.manual_seed(seed)
    if size == "taesd":
        return AutoencoderTiny()  # diffusers' defaults are TAESD's architecture
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )


def save_random_sd(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random model in diffusers layout, loadable by ``StableDiffusionGuidance.from_pretrained(folder)``."""
    folder = Path(folder)
    parts = build_random_sd(size, seed, tokenizer_dir=folder / "tokenizer")
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        parts[name].save_pretrained(folder / name)
    parts["tokenizer"].save_pretrained(folder / "tokenizer")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_text3d_note": f"random weights ({size}), made by text3d for tests; images are meaningless",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "DDIMScheduler"],
            },
            indent=2,
        )
    )
    return folder
