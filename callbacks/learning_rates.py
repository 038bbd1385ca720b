"""Learning rates in TensorBoard under the optimizer's role: `lr/codec`, `lr/disc`, `lr/aux`.

Lightning's LearningRateMonitor names optimizers by class (`lr-Adam`, `lr-Adam-1`), which
does not say which one steps the codec and which the discriminator; the training module
names its optimizers (`CodecTraining.optimizer_names`), so this callback uses those names.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class LearningRates(L.Callback):
    """Logs the learning rate each optimizer used in this iteration (its first group's)."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        for name, opt in zip(pl_module.optimizer_names, trainer.optimizers, strict=True):
            pl_module.log(f"lr/{name}", float(opt.param_groups[0]["lr"]))
