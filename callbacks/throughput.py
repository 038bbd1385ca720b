"""Training throughput in TensorBoard: iterations/s and images/s (global, all ranks).

Measured between `every_n`-iteration marks on rank zero with wall-clock time, so data
loading stalls count: it is the throughput a user gets, not a kernel benchmark.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class Throughput(L.Callback):
    def __init__(self, every_n: int, global_batch: int) -> None:
        self.every_n = max(1, int(every_n))
        self.global_batch = global_batch
        self._mark: tuple[float, int] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        it, now = pl_module.iteration, time.perf_counter()
        if self._mark is None:  # the first iteration includes start-up: not measured
            self._mark = (now, it)
            return
        t0, it0 = self._mark
        if it - it0 >= self.every_n:
            rate = (it - it0) / (now - t0)
            if trainer.is_global_zero and trainer.logger is not None:
                # written directly: Lightning drops `self.log` values between its log steps
                trainer.logger.log_metrics(
                    {"perf/iterations_per_s": rate, "perf/images_per_s": rate * self.global_batch}, step=it
                )
            self._mark = (now, it)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._mark = None  # validation time is not training throughput
