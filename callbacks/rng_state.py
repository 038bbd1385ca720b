"""Random state keyed by iteration, so a resumed run draws what an uninterrupted one would.

`seed_everything` seeds the global RNGs once per process; a resumed process would restart
them from that seed and every later draw (operating points sampled per batch, codebook
restarts, dropout) would differ from the uninterrupted run's. Saving the generator states
in the checkpoint is not enough: between the checkpoint of iteration i and batch i + 1 an
uninterrupted run may also validate or create a loader iterator, which a resumed run does
not replay. So before every training batch the global RNGs (torch on every device, numpy,
Python) are re-seeded from (stage seed, iteration): batch i draws the same numbers in any
process that reaches it, and nothing needs to be stored. Every rank uses the same seed, as
`seed_everything` does (data order differs per rank; see gicl.data). The data workers'
seeds come from gicl.data's loader, keyed by (seed, rank, epoch).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import lightning as L
import numpy as np
import torch


class IterationSeed(L.Callback):
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        key = f"gicl-train-step/{self.seed}/{pl_module.iteration}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        torch.manual_seed(seed % 2**63)  # also seeds every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)
