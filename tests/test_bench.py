"""The speed harness at tiny size on CPU: the table and the JSON records are complete (no timing asserted)."""

from __future__ import annotations

import json
import re

import torch
from conftest import TINY_OVERRIDES

from text3d.cli import main

KEYS = {"device", "stage", "it_per_s", "ms", "peak_mem_gb", "torch", "settings"}


def test_bench_harness_writes_complete_records(tmp_path, capsys):
    stages = "coarse,refine"
    sets = [f"--set={k}={v}" for k, v in TINY_OVERRIDES.items() if not k.startswith("trainer.")]
    code = main(
        [
            "bench",
            "--size",
            "tiny",
            "--stages",
            stages,
            "--steps",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--profile",
            *sets,
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and "cpu" in files[0].name
    records = json.loads(files[0].read_text())
    assert [r["stage"] for r in records] == stages.split(",")
    for r in records:
        assert KEYS <= r.keys()
        assert set(r["ms"]) == {"render", "vae_encode", "unet", "backward", "optimizer"}
        assert all(v > 0 for v in r["ms"].values()), r["ms"]
        assert r["it_per_s"] > 0 and r["peak_mem_gb"] > 0 and r["tflop_per_iter"] > 0
        assert r["settings"]["model_size"] == "tiny" and r["settings"]["resolution"] > 0
        assert r["stage"] in out
        # (c) the profile of one step: a table with the step's sections as ranges, and its three biggest ops
        assert re.fullmatch(
            rf"{files[0].stem}-profile-{r['stage']}-tiny-float32-vae-\d{{6}}\.txt", r["profile"]
        )
        table = (tmp_path / r["profile"]).read_text()
        sections, ops = table.split("## ops, by ")
        for name in ("render", "vae_encode", "unet", "backward", "optimizer"):
            assert re.search(rf"^text3d\.{name}\s+\d+\.\d+ ms\s+1 calls$", sections, re.M), (name, sections)
        assert "Self CPU" in ops
        assert len(r["profile_top"]) == 3 and all(t["ms"] > 0 for t in r["profile_top"])
        assert all(t["op"] in ops and not t["op"].startswith("text3d.") for t in r["profile_top"])
        assert f"{r['stage']} profile, biggest costs: {r['profile_top'][0]['op']}" in out
    assert "it/s" in out and "unet ms" in out and str(files[0]) in out
    assert (
        "tiny, float32, encoder vae, channels_last, compile off" in out
    )  # what the figures were measured with


def test_sds_size_sets_the_image_size_sds_encodes_at():
    """The side-by-side with stable-dreamfusion runs SDS at its fixed 512² (issue 19 (a)); the tiny model's own
    size is 32² (UNet 16², VAE factor 2)."""
    import pytest

    from text3d.bench import load_random_guidance
    from text3d.errors import ConfigError

    cpu = torch.device("cpu")
    assert load_random_guidance("tiny", cpu, torch.float32).image_size == 32
    guidance = load_random_guidance("tiny", cpu, torch.float32, sds_size=512)
    assert guidance.image_size == 512 and guidance.latent_size == 256
    with pytest.raises(ConfigError, match="multiple of the VAE's factor 2"):
        load_random_guidance("tiny", cpu, torch.float32, sds_size=511)
