"""The diffusion model's share of a coarse step, part by part, at real size with random weights.

For each way through the image encoder (the SD 2.1 VAE encoder, the same in channels_last, and the TAESD tiny
encoder) and for the UNet with CFG (NCHW and channels_last), it counts FLOPs with ``torch.utils.flop_counter`` and
times forward + the backward SDS needs. The encoder is frozen, so its backward only reaches the input image; the
UNet runs without gradients. FLOP counts do not depend on the device; the times do.

    python bench/encoder_bench.py [--device cpu] [--dtype fp32] [--repeats 2] [--parts vae,vae-cl,taesd,unet,unet-cl]

Prints one row per part and writes nothing.
"""

from __future__ import annotations

import argparse
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_step(encoder, x: torch.Tensor) -> torch.Tensor:
    """Encode ``x`` and push a unit gradient back to it: the work SDS does per image."""
    x = x.detach().requires_grad_(True)
    out = encoder.encode(x)
    z = out.latent_dist.sample() if hasattr(out, "latent_dist") else out.latents
    z.float().sum().backward()
    return x.grad


def unet_step(unet, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    t = torch.full((z.shape[0],), 500, device=z.device)
    with torch.no_grad():
        return unet(z, t, encoder_hidden_states=emb).sample


def measure(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(TFLOP of one call, mean ms over ``repeats`` calls after one warm-up)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return counter.get_total_flops() / 1e12, (time.perf_counter() - t0) * 1000 / repeats


def main() -> None:
    from diffusers import AutoencoderTiny

    from text3d.guidance.random_models import build_random_sd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parts", default="vae,vae-cl,taesd,unet,unet-cl")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    parts = build_random_sd("sd21-base")
    vae, unet = parts["vae"].to(device, dtype).eval(), parts["unet"].to(device, dtype).eval()
    taesd = AutoencoderTiny().to(device, dtype).eval()  # the default config is TAESD's architecture
    for m in (vae, unet, taesd):
        m.requires_grad_(False)
    x = torch.rand(1, 3, 512, 512, device=device, dtype=dtype) * 2 - 1
    z = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)  # CFG: conditional + unconditional
    emb = torch.randn(2, 77, 1024, device=device, dtype=dtype)
    cl = torch.channels_last

    def vae_cl():
        vae.to(memory_format=cl)
        return encoder_step(vae, x.contiguous(memory_format=cl))

    def unet_cl():
        unet.to(memory_format=cl)
        return unet_step(unet, z.contiguous(memory_format=cl), emb)

    runs = {
        "vae": ("SD VAE encoder fwd+bwd, 512²", lambda: encoder_step(vae, x)),
        "vae-cl": ("SD VAE encoder fwd+bwd, 512², channels_last", vae_cl),
        "taesd": ("TAESD encoder fwd+bwd, 512²", lambda: encoder_step(taesd, x)),
        "unet": ("UNet CFG forward (batch 2, 64²)", lambda: unet_step(unet, z, emb)),
        "unet-cl": ("UNet CFG forward, channels_last", unet_cl),
    }
    print(f"device {device}, {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'part':<48} {'TFLOP':>8} {'ms':>10}")
    for key in args.parts.split(","):
        label, fn = runs[key]
        tflop, ms = measure(fn, device, args.repeats)
        print(f"{label:<48} {tflop:8.3f} {ms:10.1f}", flush=True)


if __name__ == "__main__":
    main()
