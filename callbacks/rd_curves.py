"""Rate–distortion curves while training: a figure, image grids and overlayable scalars.

The training module sweeps the codec's operating points on the validation images and logs
`rd/<metric>/point<i>` scalars (averaged over images and ranks). This callback draws what
those numbers mean on rank zero: bpp against each metric as a figure, a grid of one image's
reconstructions per operating point, and a custom-scalars layout so that the curves of
several runs overlay in TensorBoard.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from gicl.training.context import TrainingView


def rd_figure(rows: list[dict[str, float]], title: str):
    """bpp vs every metric in `rows`, one subplot per metric, points averaged over images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted({r["point"] for r in rows})
    mean = {p: {k: sum(r[k] for r in rows if r["point"] == p) / sum(r["point"] == p for r in rows)
                for k in rows[0]} for p in points}
    metrics = [k for k in rows[0] if k not in ("point", "bpp")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        ax.plot([mean[p]["bpp"] for p in points], [mean[p][metric] for p in points], "o-")
        ax.set_xlabel("bpp")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class RDCurves(L.Callback):
    """Logs the RD figure and reconstruction grid every `every_n` validation runs."""

    def __init__(self, every_n: int = 1) -> None:
        self.every_n = max(1, int(every_n))
        self.validations = 0
        self.layout_written = False

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        if trainer.sanity_checking or not getattr(pl_module, "rd_rows", None):
            return
        self.validations += 1
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or (self.validations - 1) % self.every_n:
            return
        writer, step = logger.experiment, pl_module.iteration
        if not self.layout_written:
            metrics = [k for k in pl_module.rd_rows[0] if k != "point"]
            writer.add_custom_scalars({"rate-distortion": {
                f"{m} per operating point": ["Multiline", [rf"rd/{m}/point\d+"]] for m in metrics
            }})
            self.layout_written = True
        writer.add_figure("rd/curve", rd_figure(pl_module.rd_rows, f"iteration {step}"), step)
        images = pl_module.rd_images
        if images:
            import torchvision

            order = ["original", *sorted(k for k in images if k != "original")]
            grid = torchvision.utils.make_grid(torch.cat([images[k] for k in order]), nrow=len(order))
            writer.add_image("rd/reconstructions", grid, step)
