"""Control-GIC granularity routing: patch information density and the ratio router.

Patch spatial entropy (paper appendix A.2, official code for σ and patch sizes): grayscale
`0.2989 R + 0.587 G + 0.114 B` of the codec's input (in [−1, 1], or [0, 1] with the
authors' inference input range: the bins stay at [−1, 1] either way, as in their code); per
non-overlapping patch a soft histogram over 32 bins at `linspace(−1, 1, 32)` with Gaussian weights
`exp(−(p − bᵢ)² / 2σ²)`, σ = 0.01, averaged over the patch, normalised, and
`H = −Σ f̄ log f̄`. The 16×16 histogram is the mean of its four 8×8 histograms (equal
sizes), so both granularities come from one pass; bins are visited one at a time so memory
stays at one image plane (1080p would otherwise hold a 32-plane tensor).

Router (paper §3.1), coarse to fine, **per image with exact counts**:
- coarse: the n₃ = round(N₁₆·r₃) lowest-entropy 16×16 patches;
- medium: among the 8×8 cells not covered by coarse patches, the lowest-entropy ones, so that
  coarse + medium cover round(4·N₁₆·r₃ + N₈·r₂) cells (n₂ = that − 4·n₃);
- fine: every remaining 8×8 cell, as four 4×4 tokens.
Ties in entropy are broken by raster order (stable sort). `round` is round half up.

`rule="official"` reproduces the authors' `TripleGrainFixedEntropyRouter` (Control-GIC
commit e1c3afe, `CGIC/modules/vqvae/RouterTriple.py`): k = Python `round` (half to even) of
the same products, threshold t = the k-th smallest value, selection `value < t` (strict), so
k − 1 patches when values are distinct (25 coarse patches at r₃ = 0.1 on 256², not 26).
The medium threshold is taken over the 8×8 entropies with coarse-covered cells set to 0 (so
they count towards k), and a ratio of exactly 0 switches to the official one- or
two-granularity modes. The official code thresholds over the whole batch at once; here each
image is routed on its own (identical for the batch of one that the authors' inference
script and `compress` use), so an image's tokens never depend on its batch neighbours.
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
    """Spatial entropy of 8×8 and 16×16 patches of x (B, 3, H, W), H, W multiples
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


ROUTER_RULES = ("exact", "official")


def _up(mask: Tensor, factor: int) -> Tensor:
    return mask.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def route(e8: Tensor, e16: Tensor, ratios: Sequence[float], rule: str = "exact") -> Masks:
    """Masks from patch entropies (lowest entropy → coarsest): exact per-image counts, or the
    official strict-threshold rule (`rule="official"`, see the module docstring)."""
    if rule == "official":
        return Masks(*(torch.cat(m) for m in zip(
            *(_route_official(a[None], b[None], ratios) for a, b in zip(e8, e16, strict=True)),
            strict=True)))
    b, h16, w16 = e16.shape
    n_coarse, n_medium = token_counts(ratios, h16 * w16)
    coarse = _lowest(e16.reshape(b, -1), n_coarse).view(b, 1, h16, w16)
    covered = _up(coarse, 2)
    e8_free = e8.unsqueeze(1).masked_fill(covered, math.inf)
    medium = _lowest(e8_free.reshape(b, -1), n_medium).view_as(covered)
    fine = ~(covered | medium)
    return Masks(coarse=coarse, medium=medium, fine=_up(fine, 2))


def _below_kth(values: Tensor, k: int) -> Tensor:
    """Official threshold: entries strictly below the k-th smallest (the smallest if k = 0)."""
    flat = values.flatten()
    return values < torch.sort(flat).values[max(k - 1, 0)]


def _route_official(e8: Tensor, e16: Tensor, ratios: Sequence[float]) -> tuple[Tensor, Tensor, Tensor]:
    """(coarse, medium, fine) bool masks of one image by the official router's modes."""
    r1, r2, r3 = ratios
    e16, e8 = e16.unsqueeze(1), e8.unsqueeze(1)  # (1, 1, ·, ·)
    n16, n8 = e16.numel(), e8.numel()
    none16, none8 = torch.zeros_like(e16, dtype=torch.bool), torch.zeros_like(e8, dtype=torch.bool)
    if r1 != 0 and r2 != 0 and r3 != 0:  # official mode 0
        coarse = _below_kth(e16, round(n16 * r3))
        covered = _up(coarse, 2)
        medium = _below_kth(e8 * ~covered, round(4 * n16 * r3 + n8 * r2)) & ~covered
    elif r3 == 0 and r1 != 0 and r2 != 0:  # mode 1
        coarse, medium = none16, _below_kth(e8, round(n8 * r2))
    elif r2 == 0 and r1 != 0 and r3 != 0:  # mode 2
        coarse, medium = _below_kth(e16, round(n16 * r3)), none8
    elif r1 == 0 and r2 != 0 and r3 != 0:  # mode 3
        coarse = _below_kth(e16, round(n16 * r3))
        medium = ~_up(coarse, 2)
    else:  # modes 4–6: one granularity everywhere
        coarse, medium = none16 | (r3 != 0), none8 | (r3 == 0 and r2 != 0)
    fine = ~(_up(coarse, 4) | _up(medium, 2))
    return coarse, medium, fine


def _lowest(values: Tensor, k: int) -> Tensor:
    """Bool mask of the k smallest entries of each row (stable: ties in raster order)."""
    order = torch.sort(values, dim=1, stable=True).indices[:, :k]
    mask = torch.zeros_like(values, dtype=torch.bool)
    return mask.scatter_(1, order, True)

