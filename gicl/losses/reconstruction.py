"""Pixel reconstruction terms on the scale a recipe's loss weights were tuned for.

gicl's images are in [0, 1] everywhere (data, codecs, metrics). The taming-transformers
lineage (VQGAN, Esser et al., arXiv 2012.09841; Control-GIC, arXiv 2406.00758; ProGIC) trains
on images in [−1, 1]: there ‖x − x̂‖₁ is 2× and MSE 4× what they are on [0, 1], relative to
the LPIPS term, the codebook loss and the adaptive GAN weight. Computing the terms on [0, 1]
with those papers' weights would silently weaken reconstruction against everything else, so
the stage's `loss.pixel_range` names the scale and this module is the one place that maps to
it (`[0, 1]` leaves images as they are).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at import: the recipe validator checks `pixel_range`
    from torch import Tensor


def check_pixel_range(value: object, where: str) -> tuple[float, float]:
    """(lo, hi) from a recipe value `[lo, hi]` with lo < hi; ValueError names the key."""
    ok = (isinstance(value, Sequence) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))
    if not ok or not value[0] < value[1]:
        raise ValueError(f"{where} must be [lo, hi] with lo < hi, e.g. [-1, 1]; got {value!r}")
    return float(value[0]), float(value[1])


def to_pixel_range(x: Tensor, pixel_range: Sequence[float]) -> Tensor:
    """Map an image in [0, 1] linearly onto [lo, hi]."""
    lo, hi = pixel_range
    return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo
