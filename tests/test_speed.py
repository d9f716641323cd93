"""Speed settings must not change the maths: channels_last, torch.compile and the TAESD encoder path (issue 7).

Their speed is measured by ``text3d bench`` and ``bench/encoder_bench.py`` (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import pytest
import torch

from text3d.errors import ConfigError, ModelLoadError
from text3d.guidance.random_models import build_random_sd, build_random_taesd
from text3d.guidance.stable_diffusion import SDSConfig, StableDiffusionGuidance


def _guidance() -> StableDiffusionGuidance:
    parts = build_random_sd("tiny", seed=0)
    return StableDiffusionGuidance(**parts)


def _sds_step(guidance: StableDiffusionGuidance, text, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and the gradient that reaches the render, for one SDS call from a fixed RNG state."""
    torch.manual_seed(seed)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = guidance(rgb, text, torch.tensor([10.0, 20.0]), torch.tensor([30.0, 200.0]), SDSConfig())
    out.loss.backward()
    return out.loss.detach(), rgb.grad


def _assert_same_step(got, ref) -> None:
    """Losses equal to fp32 reordering; gradients equal up to 1e-3 of their norm (CFG at scale 100 amplifies the
    last-bit differences of reordered convolutions)."""
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-5)
    rel = (got[1] - ref[1]).norm() / ref[1].norm()
    assert rel < 1e-3, f"relative gradient error {rel:.2e}"


def test_encode_images_samples_the_vae_posterior_like_diffusers():
    g = _guidance()
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(5)
    ours = g.encode_images(x)
    torch.manual_seed(5)
    ref = g.vae.encode(x * 2 - 1).latent_dist.sample() * g.vae.config.scaling_factor
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_channels_last_and_compile_leave_sds_unchanged():
    """Same loss and render gradient, same random stream: channels_last alone, then compiled (inductor on CPU)."""
    plain = _guidance()
    text = plain.prepare_text("a red apple")
    ref = _sds_step(plain, text)
    assert ref[1].abs().sum() > 0

    fast = _guidance().optimize(channels_last=True)
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same_step(_sds_step(fast, text), ref)

    fast.optimize(compile_mode="default")
    assert fast._unet_forward is not fast.unet  # the compiled module is what runs
    for _ in range(2):  # the first call compiles, the second runs the compiled code
        _assert_same_step(_sds_step(fast, text), ref)
    with pytest.raises(ValueError, match="model.compile must be one of"):
        fast.optimize(compile_mode="fastest")


def test_taesd_encoder_loads_from_a_folder_and_carries_the_sds_gradient(tiny_model_dir, tmp_path, make_config):
    from diffusers import AutoencoderTiny

    from text3d.pipeline import load_guidance

    folder = tmp_path / "taesd"
    build_random_taesd("tiny").save_pretrained(folder)
    cfg = make_config(**{"model__encoder": "taesd", "model__taesd_id": str(folder)})
    g = load_guidance(cfg)
    assert isinstance(g.vae, AutoencoderTiny) and not g.sampled_latents
    assert not hasattr(g.vae, "decoder")  # never decoded, so never kept
    assert g.image_size == 32 and g.memory_format == torch.channels_last

    x = torch.rand(1, 3, 32, 32)
    z1, z2 = g.encode_images(x), g.encode_images(x)
    assert z1.shape == (1, 4, 16, 16)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)  # TAESD latents are deterministic: no posterior to sample

    text = g.prepare_text("a red apple")
    loss, grad = _sds_step(g, text)
    assert torch.isfinite(loss) and grad.abs().sum() > 0


def test_bad_encoder_settings_are_one_line_errors(make_config, tmp_path):
    from text3d.pipeline import load_guidance

    with pytest.raises(ConfigError, match="model.encoder must be one of vae, taesd"):
        load_guidance(make_config(**{"model__encoder": "tiny"}))
    with pytest.raises(ConfigError, match="model.compile must be one of"):
        load_guidance(make_config(**{"model__compile": "yes"}))
    missing = tmp_path / "no-taesd"
    with pytest.raises(ModelLoadError, match=r"could not load TAESD encoder .*--set model.taesd_id=/path") as err:
        load_guidance(make_config(**{"model__encoder": "taesd", "model__taesd_id": str(missing)}))
    assert "\n" not in str(err.value)
