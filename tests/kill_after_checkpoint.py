"""`python tests/kill_after_checkpoint.py K -- gicl fit ARGS`: the real `gicl fit`, SIGKILLed.

The process kills itself (SIGKILL: no handler, no cleanup, workers orphaned) right after
the periodic checkpoint of iteration K is on disk, so a test can stop a run at an exact,
chosen point instead of racing a poll loop against a fast smoke run.
"""

import os
import signal
import sys

from gicl.callbacks.checkpoint import IterationCheckpoint
from gicl.cli import main

kill_at = int(sys.argv[1])
save = IterationCheckpoint.on_train_batch_end


def save_then_die(self, trainer, pl_module, *args):
    save(self, trainer, pl_module, *args)
    if pl_module.iteration == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


IterationCheckpoint.on_train_batch_end = save_then_die
raise SystemExit(main(sys.argv[3:]))
