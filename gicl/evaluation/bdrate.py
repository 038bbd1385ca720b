"""Bjøntegaard-delta rate between two RD curves, PCHIP (the `bjontegaard` package).

Sign convention: BD-rate is the average rate difference of B (test) against A (anchor) at
equal quality, in percent: negative means B needs fewer bits than A.

Direction of the metric: the package interpolates log-rate as a function of a quality that
grows with rate (PSNR, MS-SSIM). For metrics where lower is better (LPIPS, DISTS, FID, KID)
the metric is negated first, which mirrors the integration interval without changing the
average, so BD-rate keeps the same meaning for every metric. BD-<metric> (the average
metric difference B − A at equal rate) is reported in the metric's own units: positive is
better for PSNR, negative is better for LPIPS.

The package's integration over the overlap of the two quality ranges follows JCTVC-L1100's
Excel sheet; a curve whose metric is not strictly monotonic in rate has no BD-rate.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gicl.errors import UserError
from gicl.evaluation.metric_names import LOWER_IS_BETTER, METRICS

ALIASES = {"lpips": "lpips-vgg", "msssim": "ms-ssim", "ms_ssim": "ms-ssim"}


@dataclass
class Curve:
    label: str
    rates: list[float]
    values: list[float]


@dataclass
class BDResult:
    rate_percent: float
    metric_delta: float
    notes: list[str]


def metric_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r} for bdrate (known: {', '.join(METRICS)}, lpips)")
    return name


def load_curve(path: str | Path, metric: str, rate: str = "bpp") -> Curve:
    """The (rate, metric) points of a `gicl eval` summary.json."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read eval summary {path} ({type(e).__name__}): pass the "
                        "summary.json written by `gicl eval`") from None
    if not isinstance(summary, dict) or summary.get("format") != "gicl-eval":
        raise UserError(f"{path} is not a summary.json written by `gicl eval`")
    points = summary.get("points", [])
    if not points or any(metric not in p or rate not in p for p in points):
        raise UserError(f"{path} lacks {metric} or {rate} for some point: run `gicl eval` with "
                        f"--metrics including {metric}")
    label = f"{summary['model']['codec']} ({path})"
    return Curve(label, [float(p[rate]) for p in points], [float(p[metric]) for p in points])


def _quality(curve: Curve, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rates and a quality that increases with rate, in rate order; checked monotonic."""
    order = np.argsort(curve.rates)
    rates = np.asarray(curve.rates, dtype=float)[order]
    quality = np.asarray(curve.values, dtype=float)[order]
    if metric in LOWER_IS_BETTER:
        quality = -quality
    if len(rates) < 2:
        raise UserError(f"{curve.label}: BD-rate needs at least 2 operating points")
    if np.any(rates <= 0) or np.any(np.diff(rates) <= 0) or np.any(np.diff(quality) <= 0):
        raise UserError(f"{curve.label}: {metric} does not improve strictly with rate across its "
                        "points, so the RD curve cannot be interpolated")
    return rates, quality


def bd_rate(anchor: Curve, test: Curve, metric: str) -> BDResult:
    import bjontegaard

    ra, qa = _quality(anchor, metric)
    rt, qt = _quality(test, metric)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rate = bjontegaard.bd_rate(ra, qa, rt, qt, method="pchip", require_matching_points=False)
        delta = bjontegaard.bd_psnr(ra, qa, rt, qt, method="pchip", require_matching_points=False)
    if not np.isfinite(rate):
        raise UserError(f"the {metric} ranges of the two curves do not overlap: no BD-rate")
    return BDResult(float(rate), sign * float(delta), [str(w.message) for w in caught])
