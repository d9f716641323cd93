"""Text becomes the right shape and colour (issue 18, acceptance b and c): ``generate`` with the committed toy
model at 32² on CPU, judged against the world's own ray-cast primitives from the same 8 cameras; the suite's random
tiny model, run the same way, fails the same check.

The generation settings are ordinary config overrides (``bench/toy_semantic.py``'s ``SEMANTIC_OVERRIDES``: 80
steps at 32², batch 2, white solid background, lr 0.04, CFG 50, no sparsity or orientation penalty). Measured on
the 2-core CPU with the committed model (one thread each): 8-view IoU (mean of seeds 0 and 1) cone 0.79 (cube
0.49), torus 0.79 (sphere 0.53), cylinder (the world's tall one) 0.76 (sphere 0.48); colours green, green / yellow,
yellow / blue, blue. The random tiny model's "a green cone" stays the initial blob: sphere 0.93, cone 0.41. (d):
"a crate" puts its yellow half on +Z with view-dependent prompts (150 steps, seed 0: yellow share 0.96 at azimuth 0,
0.01 at 180).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from text3d.toy.model import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "unet").is_dir(), reason="the toy model folder is not here"),
]

PROMPTS = {
    "a green cone": ("cone", "green"),
    "a yellow torus": ("torus", "yellow"),
    "a blue cylinder": ("cylinder", "blue"),
}
SEEDS = (0, 1)


def _bench():
    spec = importlib.util.spec_from_file_location("toy_semantic", ROOT / "bench" / "toy_semantic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def toy_scores(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures above were measured with one thread
    try:
        return {
            (p, s): bench.run_one(p, s, str(DEFAULT_MODEL_DIR), out, {})[0] for p in PROMPTS for s in SEEDS
        }
    finally:
        torch.set_num_threads(threads)


def _mean_ious(scores, prompt):
    shapes = scores[(prompt, SEEDS[0])].ious
    return {k: sum(scores[(prompt, s)].ious[k] for s in SEEDS) / len(SEEDS) for k in shapes}


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_text_becomes_the_right_shape(toy_scores, prompt):
    """(b) the requested primitive's 8-view silhouette IoU (mean of 2 seeds) is >= 0.75 and beats every other
    primitive, the sphere (the initial blob) included, by >= 0.15."""
    shape, _ = PROMPTS[prompt]
    ious = _mean_ious(toy_scores, prompt)
    print(prompt, {k: round(v, 3) for k, v in ious.items()})
    others = max(v for k, v in ious.items() if k != shape)
    assert ious[shape] >= 0.75 and ious[shape] - others >= 0.15, ious


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_text_becomes_the_right_colour(toy_scores, prompt):
    """(c) the mean albedo of the opaque pixels is nearest to the requested colour among the world's colours."""
    _, colour = PROMPTS[prompt]
    for seed in SEEDS:
        score = toy_scores[(prompt, seed)]
        print(prompt, seed, score.colour, score.mean_albedo)
        assert score.colour == colour, (seed, score.mean_albedo)


def test_the_random_model_fails_the_shape_check(bench, tmp_path):
    """The control: the same run with the random tiny model does not pass (b) for the cone."""
    from text3d.guidance.random_models import save_random_sd

    model = save_random_sd(tmp_path / "random", "tiny", 0)
    score, _ = bench.run_one("a green cone", 0, str(model), tmp_path / "out", {})
    print("random model:", {k: round(v, 3) for k, v in score.ious.items()}, score.colour)
    ok = score.ious["cone"] >= 0.75 and score.margin("cone") >= 0.15
    assert not ok, score.ious


def test_view_words_put_the_crates_yellow_half_on_plus_z(bench, tmp_path):
    """(d) "a crate" with view-dependent prompts (the default): the yellow half the model shows in "front
    view" samples lands on +Z, the side text3d's azimuth 0 looks at and the export's front. With them off the
    crate comes out all blue (``bench/toy_semantic.py --crate``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        front, _ = bench.run_crate(0, str(DEFAULT_MODEL_DIR), tmp_path, view_dependent=True)
    finally:
        torch.set_num_threads(threads)
    print("crate, view words on:", front)
    assert abs(front.direction_deg) < 45.0 and front.share_at(0.0) - front.share_at(180.0) > 0.5, front
