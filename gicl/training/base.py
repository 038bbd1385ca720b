"""The contract every training module keeps with the runner and the callbacks.

`CodecTraining` owns what is the same for every stage kind: the iteration counter (not
Lightning's `global_step`: with manual optimization Lightning advances it once per
`optimizer.step()`, so two optimizers would count an iteration twice), stopping after
exactly `max_steps` iterations, the named optimizer set and its per-iteration learning
rate, the auxiliary optimizer of codecs with an `aux_loss`, the model EMA of the stage's
`ema` option (gicl.training.ema: updated after each iteration's steps, used by validation
and written to `final.pt`), and what a checkpoint carries for `gicl export` and resuming.
Subclasses write `training_step` (and may add optimizers by overriding `parameter_sets`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from gicl.codecs.base import Codec, CodecOutput
from gicl.errors import RecipeError
from gicl.images import unit_float
from gicl.losses.perceptual import PerceptualLoss
from gicl.training.context import StageContext
from gicl.training.ema import build_ema, ema_applied, ema_info, update_ema
from gicl.training.optim import build_optimizer, lr_factor, set_lr


class CodecTraining(L.LightningModule):
    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None = None,
                 context: StageContext | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.codec = codec
        self.stage = stage
        self.perceptual = perceptual
        self.context = context or StageContext(max_steps=stage["max_steps"])
        self.iteration = 0
        self.iteration_index_counts: Tensor | None = None
        self.last_output = None
        self.rd_rows: list[dict[str, float]] = []
        self.rd_images: dict[Any, Tensor] = {}
        self.optimizer_names: list[str] = []
        # a submodule, so checkpoints save and restore it (under `ema.module.`); frozen
        self.ema = build_ema(codec, stage["ema"])

    # -- optimizers: a named set -----------------------------------------------------------
    def parameter_sets(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer name → the parameters it steps, in a fixed order (the order of
        `optimizer_states` in checkpoints). `codec`: trainable codec parameters except the
        auxiliary ones; `aux`: the codec's `aux_parameters`, when it has an aux loss."""
        aux = [p for p in self.codec.aux_parameters() if p.requires_grad]
        aux_ids = {id(p) for p in aux}
        sets = {"codec": [p for p in self.codec.parameters() if p.requires_grad and id(p) not in aux_ids]}
        if aux:
            sets["aux"] = aux
        return sets

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        self.lr_at = lr_factor(self.stage["scheduler"], self.stage["max_steps"])
        entries = self.stage.get("optimizers") or {}
        optimizers = []
        self.optimizer_names = []
        for name, params in self.parameter_sets().items():
            if not params:
                continue
            if name not in entries:
                raise RecipeError(f"stages.{self.context.stage}.optimizers has no '{name}' entry, "
                                  f"which module '{self.stage['module']}' needs")
            optimizers.append(build_optimizer(params, entries[name], f"optimizers.{name}"))
            self.optimizer_names.append(name)
        return optimizers

    def named_optimizers(self) -> dict[str, Any]:
        """The Lightning optimizers by name, their LR set for this iteration."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        for opt in opts:
            set_lr(opt.optimizer, self.lr_at(self.iteration))
        return dict(zip(self.optimizer_names, opts, strict=True))

    def aux_step(self, optimizers: dict[str, Any]) -> Tensor | None:
        """One step of the `aux` optimizer on `codec.aux_loss()` (CompressAI trains the
        EntropyBottleneck quantiles this way, apart from the rate–distortion loss)."""
        opt = optimizers.get("aux")
        if opt is None:
            return None
        self.toggle_optimizer(opt)
        opt.zero_grad(set_to_none=True)
        loss = self.codec.aux_loss()
        self.manual_backward(loss)
        opt.step()
        self.untoggle_optimizer(opt)
        return loss.detach()

    def clip(self, opt: Any) -> None:
        """The stage's `gradient_clip`: by global norm, or every element by value (the
        official Control-GIC config: `gradient_clip_algorithm: value`, 1.0)."""
        clip = self.stage["gradient_clip"]
        if clip["max"]:
            self.clip_gradients(opt, gradient_clip_val=clip["max"],
                                gradient_clip_algorithm=clip["algorithm"])

    # -- the forward passes of an iteration --------------------------------------------------
    @property
    def last_output(self) -> CodecOutput | None:
        """The CodecOutput of the last training forward pass (None before the first)."""
        return self._last_output

    @last_output.setter
    def last_output(self, out: CodecOutput | None) -> None:
        """Every training module sets this after each codec forward; an iteration may run
        several (micro-batches, GLC's quality rows), so their `index_counts` are also summed
        here into `iteration_index_counts` (reset when a batch starts): token statistics
        such as Control-GIC's frequency table then see the whole batch, not its last chunk."""
        self._last_output = out
        if out is not None and out.index_counts is not None:
            counts = out.index_counts.detach()
            total = self.iteration_index_counts
            self.iteration_index_counts = counts.clone() if total is None else total + counts

    # -- batches -----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches arrive as uint8 (gicl.data.build_train_loader) and become float
        in [0, 1] here, on the device, with the values the CPU conversion gives; the trainer's
        precision then applies to them as it did when the loader shipped floats (Lightning
        converts floating inputs before the transfer, which skips uint8)."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if isinstance(image, Tensor) and image.dtype == torch.uint8:
            image = unit_float(image)
            if self._trainer is not None:
                image = self.trainer.precision_plugin.convert_input(image)
            batch = {**batch, "image": image}
        return batch

    # -- iterations ------------------------------------------------------------------------
    def end_iteration(self, batch: dict[str, Tensor]) -> None:
        """Count the iteration; stop after exactly `max_steps`."""
        self.iteration += 1
        update_ema(self.ema, self.codec, self.stage["ema"], self.iteration)  # before any checkpoint
        self.log("iteration", float(self.iteration), prog_bar=True, logger=False)
        self.log("step", float(self.iteration))  # the logger's step: iterations done, as validation's
        if "skipped" in batch:
            self.log("data/skipped", float(batch["skipped"]), reduce_fx="sum")
        if self.iteration >= self.stage["max_steps"]:
            self.trainer.should_stop = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        self.iteration_index_counts = None
        if self.iteration >= self.stage["max_steps"]:  # resumed after the last iteration
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    # -- checkpoint contents ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """`gicl export` and `init:` read the codec config from here (gicl.model_file)."""
        checkpoint["gicl"] = {
            "iteration": self.iteration, "codec": self.codec.config,
            "stage": self.context.stage, "recipe": self.context.recipe,
            "optimizers": list(self.optimizer_names), "plugins": list(self.context.plugins),
            "ema": ema_info(self.ema, self.stage["ema"]),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("gicl", {})
        self.iteration = int(info.get("iteration", 0))
        if self.ema is not None and not info.get("ema"):
            raise RecipeError(f"the checkpoint was written without EMA but stages.{self.context.stage}"
                              ".ema.decay is set: resume without it, or start a new --run-dir")
        # checkpoints written before optimizers had names hold [codec, disc] in this order
        self._resumed_optimizers = info.get("optimizers") or [
            "codec", "disc"][: len(checkpoint.get("optimizer_states", []))]

    def on_train_start(self) -> None:
        """Lightning pairs stored optimizer states with optimizers by position: make sure
        they are the same set (resuming with an aux optimizer added would misplace state)."""
        stored = getattr(self, "_resumed_optimizers", None)
        if stored is not None and stored != self.optimizer_names:
            raise RecipeError(f"the checkpoint holds optimizers {stored} but this stage builds "
                              f"{self.optimizer_names}: resume with the recipe it was started "
                              "with, or start a new --run-dir")

    # -- EMA weights: what validation measures and final.pt holds ---------------------------
    def decoding_weights(self) -> AbstractContextManager[None]:
        """Inside: the codec holds the weights its model file gets (the EMA parameters when
        EMA is on, with the raw buffers). After: exactly the raw training state again."""
        return ema_applied(self.codec, self.ema)

    def weights_meta(self) -> dict[str, Any]:
        """The model-file `meta` entries that say which weights it holds."""
        if self.ema is None:
            return {"weights": "raw"}
        return {"weights": "ema", "ema": {k: self.stage["ema"][k] for k in ("decay", "start", "every")}}

    def on_validation_start(self) -> None:
        """Validation (RD points, images) measures the EMA weights when EMA is on; the raw
        trajectory continues bit for bit after it."""
        self._validation_weights = ExitStack()
        self._validation_weights.enter_context(self.decoding_weights())

    def on_validation_end(self) -> None:
        self._validation_weights.close()
