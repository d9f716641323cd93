"""Prompt handling: view-dependent prompts, cached text embeddings and Perp-Neg.

View-dependent prompts append "<view> view" to the prompt (DreamFusion), so the diffusion model is asked for the
back of the object when the camera is behind it. Perp-Neg (Armandpour et al. 2023) additionally pushes *away*
from the other views' prompts, but only along the part of their guidance that is perpendicular to the positive
guidance, which reduces multi-faced (Janus) results without fighting the positive prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from text3d.cameras import VIEW_NAMES

NEGATIVE_VIEWS: dict[int, tuple[int, int]] = {0: (1, 2), 1: (0, 2), 2: (0, 1), 3: (1, 2)}
"""For Perp-Neg: the views pushed away from, per view id (front, side, back, overhead)."""


def view_prompts(prompt: str) -> list[str]:
    """One prompt per entry of :data:`VIEW_NAMES`, e.g. ``"a red apple, front view"``."""
    return [f"{prompt}, {name} view" for name in VIEW_NAMES]


@dataclass
class TextEmbeddings:
    """Encoder outputs for one (prompt, negative prompt) pair; computed once, then reused every step.

    Attributes:
        plain: ``[1, L, D]`` the prompt as typed.
        views: ``[4, L, D]`` the prompt with each view suffix, in :data:`VIEW_NAMES` order.
        uncond: ``[1, L, D]`` the negative prompt ("" by default), the unconditional branch of CFG.
    """

    plain: Float[Tensor, "1 L D"]
    views: Float[Tensor, "4 L D"]
    uncond: Float[Tensor, "1 L D"]

    def to(self, device: torch.device, dtype: torch.dtype) -> TextEmbeddings:
        return TextEmbeddings(
            *(t.to(device=device, dtype=dtype) for t in (self.plain, self.views, self.uncond))
        )


def perp_component(a: Float[Tensor, "B C H W"], b: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
    """The part of ``a`` perpendicular to ``b``, per batch element: ``a - (a.b / |b|^2) b``."""
    dims = tuple(range(1, a.ndim))
    coef = (a * b).sum(dim=dims, keepdim=True) / (b * b).sum(dim=dims, keepdim=True).clamp(min=1e-12)
    return a - coef * b


def perp_neg_combine(
    eps_uncond: Float[Tensor, "B C H W"],
    eps_pos: Float[Tensor, "B C H W"],
    eps_neg: Float[Tensor, "K B C H W"],
    neg_weights: Float[Tensor, "K B"],
    guidance_scale: float,
) -> Float[Tensor, "B C H W"]:
    """``eps_u + s * (d_pos - sum_k w_k * perp(d_neg_k, d_pos))`` with ``d = eps - eps_u``.

    With no negatives, or negatives equal to the positive, this is exactly classifier-free guidance.
    """
    d_pos = eps_pos - eps_uncond
    delta = d_pos
    for k in range(eps_neg.shape[0]):
        d_neg = eps_neg[k] - eps_uncond
        delta = delta - neg_weights[k].view(-1, *([1] * (d_pos.ndim - 1))) * perp_component(d_neg, d_pos)
    return eps_uncond + guidance_scale * delta
