"""Codebook usage in TensorBoard: perplexity and fraction of codes used, per quantizer.

Counts live on device in each VectorQuantizer (bincount, no per-index sync) and are
summed over ranks when read, every `every_n` iterations, on every rank (a collective).
The stage's cumulative counts are kept in this callback's state, so they travel in
checkpoints (`checkpoint["callbacks"]["CodebookUsage"]["totals"]`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from gicl.nn.vq import VectorQuantizer, perplexity
from gicl.training.context import TrainingView


class CodebookUsage(L.Callback):
    def __init__(self, every_n: int | None = None) -> None:
        """every_n: iterations between readings; default trainer.log_every_n_steps."""
        self.every_n = every_n
        self.totals: dict[str, torch.Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: TrainingView, stage: str) -> None:
        self.every_n = max(1, int(self.every_n or pl_module.context.log_every))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: TrainingView, *args: Any) -> None:
        if pl_module.iteration % self.every_n == 0:
            self.collect(pl_module, log=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        self.collect(pl_module, log=False)

    def collect(self, pl_module: TrainingView, log: bool) -> None:
        """Collective: read (all-reduce) and reset every quantizer's counts."""
        for name, module in pl_module.codec.named_modules():
            if not isinstance(module, VectorQuantizer):
                continue
            counts = module.usage_counts(reset=True)
            total = self.totals.get(name)
            self.totals[name] = counts.cpu() if total is None else total + counts.cpu()
            if log and counts.sum() > 0:
                pl_module.log(f"codebook/{name}/perplexity", perplexity(counts), rank_zero_only=True)
                pl_module.log(f"codebook/{name}/used_fraction", float((counts > 0).float().mean()),
                              rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.totals = dict(state_dict.get("totals", {}))
