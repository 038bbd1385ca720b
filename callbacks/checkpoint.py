"""Checkpoints every N iterations, written atomically, read back only as data.

Lightning's ModelCheckpoint counts `global_step`, which manual optimization with two
optimizers advances twice per iteration; this counts the module's `iteration` instead.
A `last.ckpt` that cannot be resumed from (damaged, not a training checkpoint, or a pickle
that would run code) is one UserError naming the file, the reason and the way out.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gicl.atomic import atomic_torch_save
from gicl.errors import UserError
from gicl.loading import refused_global

# What every checkpoint written by `gicl fit` holds (Lightning's keys and the module's).
CHECKPOINT_KEYS = ("state_dict", "optimizer_states", "loops", "gicl")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Temp file + fsync + rename: a kill mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu",
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's resume load, always `weights_only` and with one-line errors."""
        path = Path(path)
        try:
            return read_training_checkpoint(path, map_location)
        except UserError as e:
            older = _older_checkpoint(path)
            hint = (f"; {older} loads: copy it to {path.name} to resume from it instead"
                    if older else "")
            raise UserError(f"cannot resume from {path}: {e}; run `gicl fit` again with "
                            f"--restart to start this stage over (or move the file away){hint}") from None


def read_training_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A `gicl fit` checkpoint as plain data; UserError (the reason only) if it is not one.

    `weights_only=True` refuses any pickled global outside tensors and containers, so a
    payload placed in the file is reported, never run.
    """
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError) as e:
        if (name := refused_global(e)) is not None:
            raise UserError(f"it is not plain checkpoint data: it names `{name}`, which "
                            "loading it would call (it could run code); refused, not run") from None
        raise UserError(f"it is damaged or not a checkpoint ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or (missing := [k for k in CHECKPOINT_KEYS if k not in checkpoint]):
        what = f"no {', '.join(missing)}" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(f"it is not a `gicl fit` training checkpoint ({what})")
    return checkpoint


def _older_checkpoint(path: Path) -> Path | None:
    """The newest other `*.ckpt` beside `path` that is a readable training checkpoint."""
    others = sorted((p for p in path.parent.glob("*.ckpt") if p.name != path.name),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        try:
            read_training_checkpoint(other, "cpu")
        except UserError:
            continue
        return other
    return None


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
