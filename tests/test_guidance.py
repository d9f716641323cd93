"""SDS guidance: loading, the exact SDS gradient, Perp-Neg, prompts, and an oracle-denoiser 3D fit."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from text3d.cameras import turntable_cameras
from text3d.errors import ModelLoadError, PromptError, PromptTruncatedWarning
from text3d.guidance.prompts import TextEmbeddings, perp_neg_combine, view_prompts
from text3d.guidance.stable_diffusion import SDSConfig, StableDiffusionGuidance


def test_loads_tiny_model_offline_through_hub_path(tiny_model_dir, monkeypatch):
    """(a) The saved tiny model loads through from_pretrained (the path a hub id takes) with HF_HUB_OFFLINE=1."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = StableDiffusionGuidance.from_pretrained(str(tiny_model_dir))
    assert isinstance(g.unet, UNet2DConditionModel)
    assert isinstance(g.vae, AutoencoderKL)
    assert isinstance(g.text_encoder, CLIPTextModel)
    assert isinstance(g.tokenizer, CLIPTokenizer)
    assert g.image_size == 32 and g.latent_size == 16  # tiny VAE downsamples by 2
    text = g.prepare_text("a red apple")
    assert text.views.shape == (4, 77, 32) and text.uncond.shape == (1, 77, 32)
    assert not torch.equal(text.views[0], text.views[2])  # "front view" and "back view" differ
    assert g.prepare_text("a red apple") is text  # cached
    g.release_text_encoder()
    assert g.prepare_text("a red apple") is text  # still served from the cache
    with pytest.raises(RuntimeError, match="released"):
        g.prepare_text("another prompt")


def test_missing_model_is_one_actionable_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        StableDiffusionGuidance.from_pretrained("nobody/no-such-model-xyz")
    msg = str(err.value)
    assert "\n" not in msg and "--model" in msg and "HF_HUB_OFFLINE" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a diffusers"):
        StableDiffusionGuidance.from_pretrained(str(tmp_path / "empty"))


def test_prompt_checks(tiny_guidance):
    with pytest.raises(PromptError):
        tiny_guidance.prepare_text("   ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_guidance.prepare_text("apple " * 100)
        tiny_guidance.prepare_text("a short prompt", negative_prompt="blurry " * 90)
        tiny_guidance.prepare_text("a short prompt")
    truncated = [str(w.message) for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert len(truncated) == 2, truncated  # once per long prompt, once for the long negative, none for short
    assert "the prompt is" in truncated[0] and "the negative prompt is" in truncated[1]
    assert view_prompts("a mug")[2] == "a mug, back view"


class _Probe(StableDiffusionGuidance):
    """Records the latents, noise, timesteps and guided prediction of one SDS call."""

    def encode_images(self, rgb):
        z = super().encode_images(rgb)
        z.retain_grad()
        self.z = z
        return z

    def add_noise(self, latents, noise, t):
        self.noise, self.t = noise, t
        return super().add_noise(latents, noise, t)

    def guided_noise(self, *args, **kwargs):
        self.eps_hat = super().guided_noise(*args, **kwargs)
        return self.eps_hat


@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia"])
@pytest.mark.parametrize("batch", [1, 2])
def test_sds_gradient_on_latents_is_exact(tiny_guidance, weighting, batch):
    """(b) autograd delivers exactly w(t)(eps_hat - eps) / B to the latents."""
    g = _Probe(tiny_guidance.unet, tiny_guidance.scheduler, tiny_guidance.vae, None, None)
    g._cache = tiny_guidance._cache
    text = tiny_guidance.prepare_text("a red apple")
    rgb = torch.rand(batch, 40, 40, 3, requires_grad=True)
    cfg = SDSConfig(weighting=weighting, guidance_scale=7.5)
    out = g(rgb, text, torch.full((batch,), 10.0), torch.tensor([0.0, 170.0][:batch]), cfg)
    out.loss.backward()
    abar = g.alphas[g.t].view(-1, 1, 1, 1)
    w = {"sds": 1 - abar, "uniform": torch.ones_like(abar), "fantasia": abar.sqrt() * (1 - abar)}[weighting]
    expected = w * (g.eps_hat - g.noise) / batch
    torch.testing.assert_close(g.z.grad, expected, rtol=1e-5, atol=1e-6)
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0  # and it reaches the render through the VAE


def test_sds_nan_is_zeroed_and_clamped(tiny_guidance):
    text = tiny_guidance.prepare_text("a red apple")
    g = _Probe(tiny_guidance.unet, tiny_guidance.scheduler, tiny_guidance.vae, None, None)
    g.guided_noise = lambda *a, **k: torch.full((1, 4, 16, 16), float("nan"))
    out = g(torch.rand(1, 32, 32, 3, requires_grad=True), text, torch.zeros(1), torch.zeros(1), SDSConfig())
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0
    g2 = _Probe(tiny_guidance.unet, tiny_guidance.scheduler, tiny_guidance.vae, None, None)
    out = g2(
        torch.rand(1, 32, 32, 3, requires_grad=True),
        text,
        torch.zeros(1),
        torch.zeros(1),
        SDSConfig(grad_clip=0.01),
    )
    out.loss.backward()
    assert g2.z.grad.abs().max() <= 0.01 + 1e-7


def test_timestep_range_and_annealing(tiny_guidance):
    cfg = SDSConfig(t_range=(0.02, 0.98), t_anneal_to=0.5)
    early = torch.cat([tiny_guidance.sample_timesteps(64, cfg, 0.0) for _ in range(20)])
    late = torch.cat([tiny_guidance.sample_timesteps(64, cfg, 1.0) for _ in range(20)])
    assert early.min() >= 20 and early.max() <= 980 and early.max() > 900
    assert late.max() <= 500 and late.min() >= 20


def test_perp_neg_identical_negative_leaves_result_unchanged(tiny_guidance):
    """(b) A negative equal to the positive has no perpendicular part: Perp-Neg == plain CFG."""
    eps_u, eps_pos = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    negs = torch.stack([eps_pos, eps_pos])
    out = perp_neg_combine(eps_u, eps_pos, negs, torch.full((2, 2), 3.0), guidance_scale=7.5)
    torch.testing.assert_close(out, eps_u + 7.5 * (eps_pos - eps_u))
    # A genuinely different negative does change it, and only perpendicular to the positive direction.
    other = perp_neg_combine(eps_u, eps_pos, torch.randn(1, 2, 4, 8, 8), torch.ones(1, 2), 7.5)
    delta = (other - (eps_u + 7.5 * (eps_pos - eps_u))).flatten(1)
    assert delta.abs().max() > 1e-3
    assert torch.allclose((delta * (eps_pos - eps_u).flatten(1)).sum(1), torch.zeros(2), atol=1e-3)

    # Through the real model: negatives set to the positive embedding reproduce the CFG noise estimate.
    text = tiny_guidance.prepare_text("a red apple")
    same = TextEmbeddings(plain=text.plain, views=text.views[:1].expand(4, -1, -1), uncond=text.uncond)
    noisy, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    el, az = torch.zeros(1), torch.zeros(1)
    cfg_plain = SDSConfig(guidance_scale=50.0)
    cfg_pn = SDSConfig(guidance_scale=50.0, perp_neg=True, perp_neg_weight=2.0)
    with torch.no_grad():
        a = tiny_guidance.guided_noise(noisy, t, same, el, az, cfg_plain)
        b = tiny_guidance.guided_noise(noisy, t, same, el, az, cfg_pn)
        c = tiny_guidance.guided_noise(noisy, t, text, el, az, cfg_pn)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - c).abs().max() > 1e-3


class OracleUNet(nn.Module):
    """The exact denoiser for a data distribution that is a single image ``x0``:
    ``eps_hat = (x_t - sqrt(abar) x0) / sqrt(1 - abar)``."""

    def __init__(self, x0: torch.Tensor, alphas: torch.Tensor):
        super().__init__()
        self.register_buffer("x0", x0)
        self.register_buffer("abar", alphas)
        self.config = SimpleNamespace(sample_size=x0.shape[-1])

    def forward(self, x, t, encoder_hidden_states=None):
        abar = self.abar[t].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(x - abar.sqrt() * self.x0) / (1 - abar).sqrt())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(float(((a - b) ** 2).mean()))


def test_oracle_sds_pulls_nerf_renders_to_target(tiny_guidance):
    """(b) SDS through the real volume renderer, with an oracle denoiser, gains >= 10 dB PSNR toward x0."""
    from text3d.config import apply_overrides
    from text3d.recipes.text_to_3d import CoarseStageConfig, nerf_config
    from text3d.render.shading import DiffuseShader, ShadingMode, ShadingParams
    from text3d.representations.nerf import NeRFRepresentation

    res, bg = 32, (0.1, 0.2, 0.8)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    disk = ((xx**2 + yy**2) < 0.45**2).float()[None]  # [1, H, W]
    red = torch.tensor([0.9, 0.15, 0.1]).view(3, 1, 1)
    target = disk * red + (1 - disk) * torch.tensor(bg).view(3, 1, 1)  # [3, H, W] in [0, 1]
    alphas = tiny_guidance.alphas
    oracle = OracleUNet((target * 2 - 1)[None], alphas)
    scheduler = SimpleNamespace(config=SimpleNamespace(num_train_timesteps=1000), alphas_cumprod=alphas)
    guidance = StableDiffusionGuidance(oracle, scheduler, vae=None)
    text = TextEmbeddings(torch.zeros(1, 77, 8), torch.zeros(4, 77, 8), torch.zeros(1, 77, 8))

    cfg = apply_overrides(
        CoarseStageConfig(),
        {
            "nerf.encoding.n_levels": 6,
            "nerf.encoding.log2_hashmap_size": 12,
            "nerf.encoding.max_resolution": 64,
            "nerf.hidden_dim": 32,
            "renderer.n_samples": 32,
            "background.kind": "solid",
            "background.color": ",".join(map(str, bg)),
            "lambda_sparsity": 0.0,
        },
    )
    nerf = NeRFRepresentation(nerf_config(cfg))
    shader = DiffuseShader()
    cams = turntable_cameras(4, elevation_deg=10.0, distance=1.75, fovy_deg=50.0)
    albedo = ShadingParams(ShadingMode.ALBEDO)
    sds = SDSConfig(guidance_scale=1.0, t_range=(0.02, 0.98))
    opt = torch.optim.Adam(nerf.param_groups(), betas=(0.9, 0.99), eps=1e-15)

    def psnr_now() -> float:
        with torch.no_grad():
            rgb = nerf.render(cams, res, res, shader, albedo).rgb.permute(0, 3, 1, 2)
        return _psnr(rgb, target.expand_as(rgb))

    before = psnr_now()
    for step in range(300):
        nerf.before_step(step)
        cam = cams[step % 4]
        out = nerf.render(cam, res, res, shader, albedo, training=True)
        loss = guidance(out.rgb, text, cam.elevation, cam.azimuth, sds).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = psnr_now()
    print(f"oracle SDS PSNR: {before:.2f} dB -> {after:.2f} dB")
    assert after - before >= 10.0, (before, after)
