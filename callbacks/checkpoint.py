"""Checkpoints every N iterations, written atomically.

Lightning's ModelCheckpoint counts `global_step`, which manual optimization with two
optimizers advances twice per iteration; this counts the module's `iteration` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gicl.atomic import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Temp file + fsync + rename: a kill mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class IterationCheckpoint(L.Callback):
    """Writes `<dir>/last.ckpt` every `every_n` iterations and when training ends."""

    def __init__(self, dirpath: Path, every_n: int) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n = max(1, int(every_n))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.iteration % self.every_n == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.interrupted:
            trainer.save_checkpoint(self.path, weights_only=False)
