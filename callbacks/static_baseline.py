"""A learned index entropy model against the static table it replaces, at every validation.

HyperVQ (Niu et al., arXiv:2512.07192, Table S4) reports its file rate next to the rate of
the same backbone coded with the static index table (Control-GIC's Huffman code built from
training frequencies). For a codec that has such a baseline (`codec.static_baseline()`:
HVQ-CGIC's Control-GIC backbone), this callback codes every validation image at every
operating point a second time with the baseline, into a real container as `gicl compress`
writes it, and logs per point

- `rd/static_bpp/point<i>`: the baseline's file bpp (same tokens, static table);
- `rd/saving_percent/point<i>`: 100·(1 − file bpp / static file bpp) — positive when the
  learned model codes the same indices in fewer bits;

plus the table of both (TensorBoard text `rd/static_vs_learned`, and the stage's log).
The module's own RD rows (`pl_module.rd_rows`, its file bpp per image and point) give the
learned side; only the baseline is coded here, and only encoded (the decoded image is the
same: the indices and masks are the backbone's).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from gicl.errors import UserError
from gicl.evaluation import codec_io
from gicl.evaluation.file_points import FilePoints, rd_means
from gicl.training.context import TrainingView

log = logging.getLogger("gicl")


class StaticBaseline(L.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.files: FilePoints | None = None

    def setup(self, trainer: L.Trainer, pl_module: TrainingView, stage: str) -> None:
        if not hasattr(pl_module.codec, "static_baseline"):
            raise UserError(f"callback static_baseline needs a codec with a static-table baseline; "
                            f"{pl_module.codec.codec_id} has none: drop it from the stage")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        self.rows = []
        self.files = FilePoints(pl_module.codec.static_baseline())

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: TrainingView, outputs: Any,
                                batch: dict[str, Any], batch_idx: int, *args: Any) -> None:
        x = batch["image"]
        h, w = x.shape[-2:]
        for i, point in enumerate(pl_module.codec.operating_points()):
            for j, image in enumerate(x):
                data, _ = codec_io.encode(self.files.model, image[None].float(), point)
                bpp = len(data) * 8 / (h * w)
                self.rows.append({"point": i, "image": batch_idx * len(x) + j, "bpp": bpp})

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        if not self.rows or not pl_module.rd_rows:
            return
        static, learned = rd_means(self.rows), rd_means(pl_module.rd_rows)
        for p, row in static.items():
            pl_module.log(f"rd/static_bpp/point{p}", row["bpp"], sync_dist=True)
            saving = 100 * (1 - learned[p]["bpp"] / row["bpp"])
            pl_module.log(f"rd/saving_percent/point{p}", saving, sync_dist=True)
        self.report(trainer, pl_module, static, learned)

    @rank_zero_only
    def report(self, trainer: L.Trainer, pl_module: TrainingView, static: dict, learned: dict) -> None:
        points = pl_module.codec.operating_points()
        text = comparison_table(points, static, learned)
        log.info("validation at iteration %d, file bpp of the same indices:\n%s", pl_module.iteration, text)
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_text("rd/static_vs_learned", text, pl_module.iteration)


def comparison_table(points: list[dict[str, Any]], static: dict, learned: dict) -> str:
    """Markdown: point, its parameters, learned and static file bpp, saving."""
    lines = ["| point | operating point | learned model, file bpp | static table, file bpp | saving |",
             "|---|---|---|---|---|"]
    for p in sorted(static):
        a, b = learned[p]["bpp"], static[p]["bpp"]
        lines.append(f"| {p} | {points[p]} | {a:.4f} | {b:.4f} | {100 * (1 - a / b):+.1f} % |")
    return "\n".join(lines)
