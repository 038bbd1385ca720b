"""Control-GIC's statistical entropy coding table: index frequencies counted in training.

Each iteration's counts of *coded* tokens (`iteration_index_counts` of the training module:
the `CodecOutput.index_counts` bincounts of every forward pass of the iteration summed, so
with `micro_batches > 1` every chunk counts, not only the last) are added to a local device
tensor — no per-index `.item()` sync (the official loop's cost) — and every `every_n`
iterations, and when training ends, summed over ranks and moved into the codec's persistent
`index_frequencies` buffer, so checkpoints and model files carry the table. The table is
reset to zero at iteration `start`, so it ends up holding exactly the number of coded tokens
seen from there on (the paper counts over the training set at the end of training: set
`start` near the end of the budget for that).

Which positions count, compared with the official code (lianqi1008/Control-GIC,
`CGIC/modules/vqvae/quantize.py`): the official quantizer runs on the hybrid latent at H/4
and, in training mode, adds one per position to a per-index counter in a Python `.item()`
loop — so a coarse token (one 16×16 patch) counts 16 times and a medium token (an 8×8 cell)
4 times, from the first training step on. gicl counts each coded token once, whatever its
granularity: exactly the symbols the Huffman code then codes (one per coarse patch, medium
cell and fine 4×4 block), so the table is the empirical distribution of the coded stream.

Codecs that keep such a table (Control-GIC) ask for this callback in their registration,
so only their stages get it; recipes set `callbacks: {frequency_table: {start: N}}`.
`every_n` defaults to the checkpoint cadence, so every checkpoint holds the current table
(this callback runs before the checkpoint callback).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from gicl.errors import UserError
from gicl.training.context import TrainingView


class FrequencyTable(L.Callback):
    def __init__(self, start: int = 0, every_n: int | None = None) -> None:
        self.start = int(start)
        self.every_n = every_n
        self.local: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: TrainingView, stage: str) -> None:
        if not hasattr(pl_module.codec, "accumulate_frequencies"):
            raise UserError(f"callback frequency_table needs a codec with an index frequency "
                            f"table; {pl_module.codec.codec_id} has none: drop it from the stage")
        self.every_n = max(1, int(self.every_n or pl_module.context.ckpt_every))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: TrainingView, *args: Any) -> None:
        if pl_module.iteration == self.start:
            pl_module.codec.index_frequencies.zero_()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: TrainingView, *args: Any) -> None:
        counts = pl_module.iteration_index_counts
        if counts is None:
            return
        if pl_module.iteration > self.start:
            self.local = counts.clone() if self.local is None else self.local + counts
        if pl_module.iteration % self.every_n == 0:
            self.flush(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: TrainingView) -> None:
        self.flush(pl_module)

    def flush(self, pl_module: TrainingView) -> None:
        """Collective: every rank calls it at the same iterations."""
        codec = pl_module.codec
        local = self.local if self.local is not None else torch.zeros_like(codec.index_frequencies)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(local)
        codec.accumulate_frequencies(local)
        self.local = None
