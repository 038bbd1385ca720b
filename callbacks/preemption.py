"""Preemption on SLURM: on SIGUSR1, checkpoint at the next iteration boundary and requeue.

Lightning's own SLURM handler saves from inside the signal handler, which can land
between the generator and discriminator steps of an iteration; here the handler only sets
a flag, all ranks agree on it once per iteration (one boolean all-reduce), and the
checkpoint is a consistent `last.ckpt`. Rank zero then runs `scontrol requeue`; the rerun of
the job resumes the same run dir from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger("gicl")


class Preemption(L.Callback):
    def __init__(self, checkpoint: Path, sig: signal.Signals = signal.SIGUSR1) -> None:
        self.checkpoint = Path(checkpoint)
        self.sig = sig
        self.requested = False

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        signal.signal(self.sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        trainer.save_checkpoint(self.checkpoint, weights_only=False)
        log.info("preempted at iteration %d: saved %s", pl_module.iteration, self.checkpoint)
        job = os.environ.get("SLURM_JOB_ID")
        if trainer.is_global_zero and job:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            status = "ok" if done.returncode == 0 else done.stderr.strip()
            log.info("requeue of SLURM job %s: %s", job, status)
        trainer.should_stop = True
