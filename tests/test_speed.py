"""Speed settings must not change the maths: channels_last, torch.compile and the TAESD encoder path (issue 7).

Their speed is measured by ``text3d bench`` and ``bench/encoder_bench.py`` (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
    with pytest.raises(ConfigError, match="model.compile must be one of"):
        fast.optimize(compile_mode="fastest")


def test_taesd_encoder_loads_from_a_folder_and_carries_the_sds_gradient(
    tiny_model_dir, tmp_path, make_config
):
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
    # TAESD latents are deterministic (no posterior to sample) and are what diffusers' own encode() returns
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    ref = g.vae.encode((x * 2 - 1).contiguous(memory_format=torch.channels_last)).latents
    torch.testing.assert_close(z1, ref * g.vae.config.scaling_factor, rtol=1e-5, atol=1e-6)

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
    with pytest.raises(
        ModelLoadError,
        match=r"TAESD encoder folder .*no-taesd does not exist.*--set model.taesd_id=madebyollin/taesd",
    ) as err:
        load_guidance(make_config(**{"model__encoder": "taesd", "model__taesd_id": str(missing)}))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ host syncs
SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "is_nonzero",
    "equal",
}
"""aten ops that read a device tensor's values back to the host (``.item()``, ``bool()``, ``nonzero()``, boolean
masks, ``unique``...): each one stalls the CPU until the GPU has caught up."""

ALLOWED_SYNCS = {
    ("nonzero", "render/volume.py", "_render_rays"),
    ("tolist", "render/shading.py", "sample_shading"),
}
"""The reads a coarse step keeps on purpose. The compaction of the samples in occupied cells is the one device sync:
empty-space skipping queries the field at ~15% of the samples, and how many is data-dependent. The shading draw
reads two numbers the CPU generator just made (a CPU tensor on any device), which costs no device sync."""


class SyncProbe(TorchDispatchMode):
    """Records every host-sync op dispatched inside the block with the innermost text3d frame that caused it.

    On CPU nothing really waits, but the same ops are what stall a GPU, so the CPU suite can guard the step.
    ``Tensor.tolist``/``numpy`` bypass the dispatcher and are recorded by wrapping them.
    """

    def __init__(self):
        super().__init__()
        self.hits: list[tuple[str, str, str]] = []
        self._saved = {}

    def _site(self, op: str) -> None:
        frames = [f for f in traceback.extract_stack() if "/text3d/" in f.filename.replace("\\", "/")]
        if frames:
            f = frames[-1]
            self.hits.append((op, f.filename.replace("\\", "/").split("/text3d/")[-1], f.name))
        else:
            self.hits.append((op, "?", "?"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in SYNC_OPS:
            self._site(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in ("tolist", "numpy"):
            original = self._saved[name] = getattr(torch.Tensor, name)

            def wrapped(t, *a, _name=name, _original=original, **k):
                self._site(_name)
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, wrapped)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)


def _coarse_trainer(make_config, tmp_path, device: str = "cpu", **overrides):
    from text3d.pipeline import build_stages
    from text3d.training.trainer import Trainer, TrainerConfig

    cfg = make_config(device=device, **overrides)
    parts = build_random_sd("tiny", seed=0)
    for name in ("unet", "vae", "text_encoder"):
        parts[name].to(device)
    g = StableDiffusionGuidance(**parts).optimize(channels_last=cfg.model.channels_last)
    text = g.prepare_text("a red apple")
    stage = build_stages(cfg, g, text)[0].to(device)
    return Trainer(stage, tmp_path, TrainerConfig(progress_bar=False))


def test_probe_sees_a_host_read():
    """The probe itself: ``.item()``, ``bool()``, ``nonzero()`` and ``.tolist()`` of a tensor are all recorded."""
    from text3d.geometry import mesh as mesh_ops

    x = torch.rand(5)
    with SyncProbe() as probe:
        x.sum().item()
        bool(x.max() > 0)
        x.nonzero()
        x.tolist()
        mesh_ops.edge_face_pairs(torch.tensor([[0, 1, 2], [1, 3, 2]]))  # reads int(faces.max())
    ops = [op for op, _, _ in probe.hits]
    assert ops[:4] == ["_local_scalar_dense", "_local_scalar_dense", "nonzero", "tolist"], ops
    assert ("_local_scalar_dense", "geometry/mesh.py", "edge_face_pairs") in probe.hits


def test_coarse_step_reads_nothing_back_but_the_occupancy_compaction(make_config, tmp_path):
    """No ``.item()``, ``bool()``, ``.cpu()``-style reads in a coarse step (lit shading, Perp-Neg, an occupancy-grid
    refresh and the Adam step included), apart from the one deliberate compaction. The loss is read by the trainer
    only every ``log_every`` steps, outside ``train_step``."""
    trainer = _coarse_trainer(
        make_config,
        tmp_path,
        **{
            "coarse__shading__albedo_only_steps": "0",
            "coarse__sds__perp_neg": "true",
            "coarse__occupancy__update_every": "2",
        },
    )
    for _ in range(4):  # steps 0 and 2 refresh the occupancy grid; steps 1 and 3 do not
        with SyncProbe() as probe:
            trainer.train_step()
        trainer.step += 1
        assert set(probe.hits) <= ALLOWED_SYNCS, sorted(set(probe.hits) - ALLOWED_SYNCS)
        assert [op for op, _, _ in probe.hits].count("nonzero") == 1  # exactly one compaction per step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_coarse_step_on_gpu_synchronises_only_for_the_compaction(make_config, tmp_path):
    """The GPU truth behind the CPU probe: CUDA's sync debug mode warns at every synchronising call."""
    import warnings

    trainer = _coarse_trainer(
        make_config, tmp_path, device="cuda", **{"coarse__shading__albedo_only_steps": "0"}
    )
    trainer.train_step()  # warm-up: lazy initialisations may synchronise once
    trainer.step += 1
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sites = [
        (w.filename.replace("\\", "/").split("/text3d/")[-1], w.lineno)
        for w in caught
        if "synchroniz" in str(w.message)
    ]
    print("synchronising calls:", sites)
    assert sites and all(path == "render/volume.py" for path, _ in sites), sites
