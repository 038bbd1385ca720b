"""Progress over the stage's iteration budget, for a terminal and for a log file alike.

Lightning's bar counts batches of an epoch; gicl's stages are budgets of iterations that
cross many short epochs (9 sample photos in batches of 4 make a 3-batch epoch), so that bar
restarts every few iterations with a meaningless rate and ETA. This one counts iterations of
the stage from where the run stands (a resumed run starts at its checkpoint's iteration):

- on a terminal, one tqdm bar with total = the stage budget, tqdm's smoothed it/s, images/s
  and the current losses;
- otherwise (SLURM logs, `> file`), one plain line every `every_s` seconds and at the end:
  `train: iteration 120/400 (30%) | 2.95 it/s, 11.8 images/s | ETA 1m35s | loss 0.4741`,
  where it/s is measured since the line before, over time spent in the training loop only
  (validation is paused out), and the ETA assumes that rate for the rest of the budget.

Both go to stdout, as Lightning's bar does; gicl's log lines go to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

# Progress-bar metrics that are bookkeeping, not something a user reads.
HIDDEN = {"iteration", "v_num"}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class TrainingClock:
    """Seconds spent in the training loop, with validation paused out."""

    def __init__(self) -> None:
        self.spent, self._since = 0.0, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def pause(self) -> None:
        if self._since is not None:
            self.spent += time.perf_counter() - self._since
            self._since = None

    def seconds(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self.spent + running


class IterationProgressBar(ProgressBar):
    def __init__(self, max_steps: int, stage: str, global_batch: int, every_s: float = 30.0,
                 stream: TextIO | None = None) -> None:
        super().__init__()
        self.max_steps, self.stage_name, self.global_batch = max_steps, stage, global_batch
        self.every_s = every_s
        self.stream = stream or sys.stdout
        self._enabled = True
        self._bar: tqdm | None = None
        self._clock = TrainingClock()
        self._last_line, self._last_line_time = 0, 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _metrics(self, trainer: L.Trainer, pl_module: Any) -> str:
        items = self.get_metrics(trainer, pl_module).items()
        return " ".join(f"{k.removeprefix('train/').removesuffix('_step')} {float(v):.4g}"
                        for k, v in items if k not in HIDDEN)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._last_line = pl_module.iteration
        if self.stream.isatty():
            self._bar = tqdm(total=self.max_steps, initial=self._last_line, desc=self.stage_name,
                             unit="it", dynamic_ncols=True, file=self.stream, smoothing=0.1)
        self._clock.start()
        self._last_line_time = self._clock.seconds()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        n = pl_module.iteration
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            rate = self._bar.format_dict.get("rate") or 0.0
            self._bar.set_postfix_str(f"{rate * self.global_batch:.1f} img/s "
                                      f"{self._metrics(trainer, pl_module)}", refresh=False)
        elif self._clock.seconds() - self._last_line_time >= self.every_s or n >= self.max_steps:
            self._line(trainer, pl_module, n)

    def _line(self, trainer: L.Trainer, pl_module: Any, n: int) -> None:
        spent = self._clock.seconds()
        window = spent - self._last_line_time
        rate = (n - self._last_line) / window if window > 0 else 0.0
        eta = duration((self.max_steps - n) / rate) if rate > 0 else "?"
        print(f"{self.stage_name}: iteration {n}/{self.max_steps} ({100 * n / self.max_steps:.0f}%) | "
              f"{rate:.3g} it/s, {rate * self.global_batch:.3g} images/s | ETA {eta} | "
              f"{self._metrics(trainer, pl_module)}", file=self.stream, flush=True)
        self._last_line, self._last_line_time = n, spent

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "fit":
            self._clock.pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "fit":
            self._clock.start()

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._clock.pause()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled and trainer.is_global_zero and pl_module.iteration != self._last_line:
            self._line(trainer, pl_module, pl_module.iteration)
