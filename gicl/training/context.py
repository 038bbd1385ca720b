"""What the runner tells a training module about its stage, and what callbacks may read
from a training module. Lightning-free, so that callbacks and plugins can type against it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor

    from gicl.codecs.base import Codec, CodecOutput


@dataclass(frozen=True)
class StageContext:
    """The run-time facts of one stage: names, budget and cadences (iterations)."""

    recipe: str = ""
    stage: str = ""
    max_steps: int = 1
    global_batch: int = 1
    log_every: int = 50  # trainer.log_every_n_steps
    ckpt_every: int = 1000  # trainer.ckpt_every_n_steps
    stage_dir: Path | None = None
    plugins: tuple[str, ...] = ()  # the recipe's plugins: checkpoints name them for loaders


class TrainingView(Protocol):
    """The attributes of a training module a callback may read (gicl.training.base has them).

    iteration: completed iterations (batches) of this stage, saved in checkpoints.
    codec: the codec being trained.
    context: the stage's StageContext.
    last_output: the CodecOutput of the last training forward pass (None before the first).
    iteration_index_counts: (K,) coded tokens per codeword summed over every forward pass of
    the current iteration (all micro-batches), or None when the codec reports no counts.
    rd_rows / rd_images: the last validation's rate–distortion rows, one per image and
    operating point ({"point", "image", "bpp": file bpp of the real container, metric:
    value}, gicl.evaluation.file_points), and the first image's decoded pixels per operating
    point (plus "original"), (1, 3, H, W) floats.
    log: Lightning's `LightningModule.log`.
    """

    iteration: int
    codec: Codec
    context: StageContext
    last_output: CodecOutput | None
    iteration_index_counts: Tensor | None
    rd_rows: list[dict[str, float]]
    rd_images: dict[Any, Tensor]

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        """Lightning's logging, for a callback's scalars."""
