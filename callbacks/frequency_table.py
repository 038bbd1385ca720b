"""Control-GIC's statistical entropy coding table: index frequencies counted in training.

Each batch's counts of *coded* tokens (`extras["index_counts"]`, a bincount on device) are
added to a local device tensor — no per-index `.item()` sync (the official loop's cost) —
and every `every_n` iterations, and when training ends, summed over ranks and moved into
the codec's persistent `index_frequencies` buffer, so checkpoints and model files carry the
table. The table is reset to zero at iteration `start`, so it ends up holding exactly the
number of coded tokens seen from there on (the paper counts over the training set at the
end of training: set `start` near the end of the budget for that).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist


class FrequencyTable(L.Callback):
    def __init__(self, every_n: int, start: int = 0) -> None:
        self.every_n = max(1, int(every_n))
        self.start = int(start)
        self.local: torch.Tensor | None = None

    @staticmethod
    def applies(codec: Any) -> bool:
        return hasattr(codec, "accumulate_frequencies")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.applies(pl_module.codec) and pl_module.iteration == self.start:
            pl_module.codec.index_frequencies.zero_()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        codec = pl_module.codec
        extras = getattr(pl_module, "last_extras", None) or {}
        if not self.applies(codec) or "index_counts" not in extras:
            return
        if pl_module.iteration > self.start:
            counts = extras["index_counts"].detach()
            self.local = counts.clone() if self.local is None else self.local + counts
        if pl_module.iteration % self.every_n == 0:
            self.flush(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.applies(pl_module.codec):
            self.flush(pl_module)

    def flush(self, pl_module: Any) -> None:
        """Collective: every rank calls it at the same iterations."""
        codec = pl_module.codec
        local = self.local if self.local is not None else torch.zeros_like(codec.index_frequencies)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(local)
        codec.accumulate_frequencies(local)
        self.local = None
