"""Control-GIC granularity routing: patch information density and the ratio router.

Patch spatial entropy (paper appendix A.2, official code for σ and patch sizes): grayscale
`0.2989 R + 0.587 G + 0.114 B` of the input in [−1, 1]; per non-overlapping patch a soft
histogram over 32 bins at `linspace(−1, 1, 32)` with Gaussian weights
`exp(−(p − bᵢ)² / 2σ²)`, σ = 0.01, averaged over the patch, normalised, and
`H = −Σ f̄ log f̄`. The 16×16 histogram is the mean of its four 8×8 histograms (equal
sizes), so both granularities come from one pass; bins are visited one at a time so memory
stays at one image plane (1080p would otherwise hold a 32-plane tensor).

Router (paper §3.1, granularity-informed encoder), coarse to fine, **per image with exact counts**:
- coarse: the n₃ = round(N₁₆·r₃) lowest-entropy 16×16 patches;
- medium: among the 8×8 cells not covered by coarse patches, the lowest-entropy ones, so that
  coarse + medium cover round(4·N₁₆·r₃ + N₈·r₂) cells (n₂ = that − 4·n₃);
- fine: every remaining 8×8 cell, as four 4×4 tokens.
The official code thresholds entropies over the whole batch with a strict `<`, which yields
k − 1 patches and couples images of a batch; here every image gets exactly the counts its
ratios ask for. Ties in entropy are broken by raster order (stable sort). `round` is round
half up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY = (0.2989, 0.587, 0.114)
NUM_BINS = 32
SIGMA = 0.01


def grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) → (B, 1, H, W) with the official weights."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


def patch_entropies(
    x: Tensor, *, bins: int = NUM_BINS, sigma: float = SIGMA
) -> tuple[Tensor, Tensor]:
    """Spatial entropy of 8×8 and 16×16 patches of x (B, 3, H, W) in [−1, 1], H, W multiples
    of 16. Returns (e8 (B, H/8, W/8), e16 (B, H/16, W/16)), natural log."""
    g = grayscale(x.float())
    centres = torch.linspace(-1.0, 1.0, bins, device=x.device)
    pdf8 = torch.stack(
        [F.avg_pool2d(torch.exp(-0.5 * ((g - c) / sigma) ** 2), 8)[:, 0] for c in centres], 1
    )
    return _entropy(pdf8), _entropy(F.avg_pool2d(pdf8, 2))


def _entropy(pdf: Tensor) -> Tensor:
    """Entropy over dim 1 of an unnormalised histogram (bins never all vanish: every pixel is
    within half a bin spacing, 3.2σ, of some centre)."""
    p = pdf / pdf.sum(1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(1)


def round_half_up(v: float) -> int:
    return math.floor(v + 0.5 + 1e-9)


@dataclass
class Masks:
    """Granularity masks, bool (B, 1, ·, ·): coarse at H/16, medium at H/8, fine at H/4."""

    coarse: Tensor
    medium: Tensor
    fine: Tensor

    def as_dict(self) -> dict[str, Tensor]:
        return {"fine": self.fine, "medium": self.medium, "coarse": self.coarse}


def token_counts(ratios: Sequence[float], n16: int) -> tuple[int, int]:
    """(coarse patches, medium cells) per image for ratios (r₁, r₂, r₃) and N₁₆ patches."""
    _, r2, r3 = ratios
    n8 = 4 * n16
    coarse = min(round_half_up(n16 * r3), n16)
    medium = round_half_up(4 * n16 * r3 + n8 * r2) - 4 * coarse
    return coarse, max(0, min(medium, n8 - 4 * coarse))


def route(e8: Tensor, e16: Tensor, ratios: Sequence[float]) -> Masks:
    """Masks with exact per-image counts from patch entropies (lowest entropy → coarsest)."""
    b, h16, w16 = e16.shape
    n_coarse, n_medium = token_counts(ratios, h16 * w16)
    coarse = _lowest(e16.reshape(b, -1), n_coarse).view(b, 1, h16, w16)
    covered = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
    e8_free = e8.unsqueeze(1).masked_fill(covered, math.inf)
    medium = _lowest(e8_free.reshape(b, -1), n_medium).view_as(covered)
    fine = ~(covered | medium)
    return Masks(coarse=coarse, medium=medium, fine=fine.repeat_interleave(2, -2).repeat_interleave(2, -1))


def _lowest(values: Tensor, k: int) -> Tensor:
    """Bool mask of the k smallest entries of each row (stable: ties in raster order)."""
    order = torch.sort(values, dim=1, stable=True).indices[:, :k]
    mask = torch.zeros_like(values, dtype=torch.bool)
    return mask.scatter_(1, order, True)

