"""A progress bar over the stage's iteration budget, not Lightning's per-epoch count."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class IterationProgressBar(TQDMProgressBar):
    def __init__(self, max_steps: int, stage: str, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.max_steps = max_steps
        self.stage_name = stage

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.reset(total=self.max_steps)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.n = pl_module.iteration
        self.train_progress_bar.set_description(f"{self.stage_name} (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = pl_module.iteration
        if n % self.refresh_rate == 0 or n >= self.max_steps:
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()
