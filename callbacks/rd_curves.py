"""Rate–distortion curves while training: figures, labelled reconstructions and scalars.

The training module codes every validation image at each operating point into a real
`.gic` container and decodes it (gicl.evaluation.file_points), and logs
`rd/<metric>/point<i>` scalars at the iteration. This callback draws what those numbers
mean on rank zero, at the same step:

- `rd/curve`: file bpp (container and header included, as `gicl compress` writes) against
  each available metric, one panel per metric, axes named with their units;
- `rd/overlay`: the curves of every validation so far in one figure, older ones fainter;
- `rd/reconstructions`: the first validation image and its decoded versions, each tile
  titled with its point, file bpp and PSNR;
- `rd/points`: the plotted numbers as a text table;
- a custom-scalars layout, so that the curves of several runs overlay in TensorBoard.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from gicl.evaluation.file_points import rd_means
from gicl.evaluation.metric_names import LOWER_IS_BETTER
from gicl.training.context import TrainingView

BPP_LABEL = "file bpp (container included)"
AXIS_LABELS = {"psnr": "PSNR (dB)", "ms-ssim": "MS-SSIM", "lpips-vgg": "LPIPS (VGG)",
               "lpips-alex": "LPIPS (AlexNet)", "dists": "DISTS"}

Means = dict[int, dict[str, float]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axis_label(metric: str) -> str:
    label = AXIS_LABELS.get(metric, metric)
    return f"{label}, lower is better" if metric in LOWER_IS_BETTER else label


def metrics_of(means: Means) -> list[str]:
    """The metrics every point has, in the order the rows give them (bpp is the x axis)."""
    keys = [k for k in next(iter(means.values())) if k != "bpp"]
    return [k for k in keys if all(k in m for m in means.values())]


def rd_overlay(history: list[tuple[int, Means]], title: str):
    """One panel per metric, one curve per (step, means) of `history`, oldest faintest."""
    plt = _pyplot()
    metrics = metrics_of(history[-1][1])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for n, (step, means) in enumerate(history):
            points = [p for p in sorted(means) if metric in means[p]]
            alpha = 1.0 if n == len(history) - 1 else 0.15 + 0.6 * (n + 1) / len(history)
            ax.plot([means[p]["bpp"] for p in points], [means[p][metric] for p in points], "o-",
                    alpha=alpha, color="C0", label=f"iteration {step}")
        ax.set_xlabel(BPP_LABEL)
        ax.set_ylabel(axis_label(metric))
        ax.grid(alpha=0.3)
    if len(history) > 1:
        axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rd_figure(means: Means, step: int):
    """File bpp against every metric at one validation step."""
    return rd_overlay([(step, means)], f"iteration {step}")


def tile_label(point: int, row: dict[str, float]) -> str:
    return f"point {point}: {row['bpp']:.4f} bpp, {row['psnr']:.2f} dB"


def reconstruction_tiles(images: dict, labels: dict[int, str]):
    """The original and each point's decoded image side by side, each tile titled."""
    plt = _pyplot()
    points = sorted(k for k in images if k != "original")
    fig, axes = plt.subplots(1, 1 + len(points), figsize=(2.6 * (1 + len(points)), 3.0),
                             squeeze=False)
    for ax, key in zip(axes[0], ["original", *points], strict=True):
        image: Tensor = images[key][0]
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title("original" if key == "original" else labels[key], fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def points_table(means: Means) -> str:
    """The plotted numbers as a Markdown table (TensorBoard's text tab)."""
    metrics = metrics_of(means)
    head = ["point", BPP_LABEL, *(axis_label(m) for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, m in means.items():
        lines.append("| " + " | ".join([str(p), f"{m['bpp']:.6f}", *(f"{m[k]:.4f}" for k in metrics)]) + " |")
    return "\n".join(lines)


class RDCurves(L.Callback):
    """Logs the RD figures, table and labelled reconstructions every `every_n` validations."""

    def __init__(self, every_n: int = 1) -> None:
        self.every_n = max(1, int(every_n))
        self.validations = 0
        self.layout_written = False
        self.history: list[tuple[int, Means]] = []

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        if trainer.sanity_checking or not getattr(pl_module, "rd_rows", None):
            return
        self.validations += 1
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or (self.validations - 1) % self.every_n:
            return
        writer, step = logger.experiment, pl_module.iteration
        means = rd_means(pl_module.rd_rows)
        if not self.layout_written:
            writer.add_custom_scalars({"rate-distortion": {
                f"{axis_label(m) if m != 'bpp' else BPP_LABEL} per operating point":
                    ["Multiline", [rf"rd/{m}/point\d+"]] for m in ["bpp", *metrics_of(means)]
            }})
            self.layout_written = True
        self.history.append((step, means))
        writer.add_figure("rd/curve", rd_figure(means, step), step)
        writer.add_figure("rd/overlay", rd_overlay(self.history, f"iterations {self.history[0][0]}"
                                                   f"–{step} (older fainter)"), step)
        writer.add_text("rd/points", points_table(means), step)
        first = {int(r["point"]): r for r in pl_module.rd_rows if r["image"] == 0}
        if pl_module.rd_images:
            labels = {p: tile_label(p, row) for p, row in first.items()}
            writer.add_figure("rd/reconstructions", reconstruction_tiles(pl_module.rd_images, labels), step)
