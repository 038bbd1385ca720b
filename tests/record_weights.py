"""`python tests/record_weights.py DIR -- gicl fit ARGS`: the real `gicl fit`, recording.

After every iteration (right after its checkpoint callback), every process — each DDP rank
runs this script too — saves the codec's raw parameters and its EMA copy's parameters to
`DIR/rank<R>-<iteration>.pt`, so a test can follow the average step by step and compare
what the ranks hold. It only reads the training module; training is unchanged.
"""

import sys
from pathlib import Path

import torch

from gicl.callbacks.checkpoint import IterationCheckpoint
from gicl.cli import main

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
save = IterationCheckpoint.on_train_batch_end


def save_then_record(self, trainer, pl_module, *args):
    save(self, trainer, pl_module, *args)
    record = {"raw": {n: p.detach().clone() for n, p in pl_module.codec.named_parameters()},
              "ema": {n: p.detach().clone() for n, p in pl_module.ema.module.named_parameters()}}
    torch.save(record, out / f"rank{trainer.global_rank}-{pl_module.iteration}.pt")


IterationCheckpoint.on_train_batch_end = save_then_record
raise SystemExit(main(sys.argv[3:]))
