"""Rate-distortion plots: bpp (whole file) against every metric of an eval summary."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from gicl.evaluation.metric_names import LOWER_IS_BETTER
from gicl.images import write_file


def rd_plot(summary: dict[str, Any], path: str | Path) -> None:
    """One panel per metric, points in rate order; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(summary["points"], key=lambda p: p["bpp"])
    metrics = [m for m in summary["metrics"] if m in points[0]]
    cols = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        ax.plot([p["bpp"] for p in points], [p[metric] for p in points], "o-",
                label=summary["model"]["codec"])
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        ax.set(xlabel="bpp", ylabel=f"{metric} ({better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_file(path, buffer.getvalue())
