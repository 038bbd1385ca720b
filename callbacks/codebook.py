"""Codebook usage in TensorBoard: perplexity and fraction of codes used, per quantizer.

Counts live on device in each VectorQuantizer (bincount, no per-index sync) and are
summed over ranks when read, every `every_n` iterations, on every rank (a collective).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from gicl.nn.vq import VectorQuantizer, perplexity


class CodebookUsage(L.Callback):
    def __init__(self, every_n: int) -> None:
        self.every_n = max(1, int(every_n))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.iteration % self.every_n:
            return
        for name, module in pl_module.codec.named_modules():
            if isinstance(module, VectorQuantizer):
                counts = module.usage_counts(reset=True)
                if counts.sum() == 0:
                    continue
                tag = name.replace("codec.", "")
                pl_module.log(f"codebook/{tag}/perplexity", perplexity(counts), rank_zero_only=True)
                pl_module.log(f"codebook/{tag}/used_fraction",
                              float((counts > 0).float().mean()), rank_zero_only=True)
