"""The shared GAN training base: manual optimization of generator (the codec) and
PatchGAN discriminator, hinge loss, taming's adaptive weight, `disc_start`, clipping.

Iterations, not Lightning's `global_step`, drive everything here: with manual optimization
Lightning advances `global_step` once per `optimizer.step()`, so a generator and a
discriminator step would count an iteration twice (and once before `disc_start`).
`self.iteration` counts batches, is saved in checkpoints, and decides `disc_start`, the LR
schedule and the end of the stage (`max_steps` iterations exactly).

Subclasses override `generator_objective` (ProGIC's λᵢ-weighted sum, rate terms, ...);
modules hold losses and optimization, the codec holds the model.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from gicl.codecs.base import Codec, CodecOutput
from gicl.losses.adversarial import adaptive_weight, generator_loss, hinge_d_loss
from gicl.losses.perceptual import PerceptualLoss
from gicl.nn.discriminator import NLayerDiscriminator
from gicl.training.optim import build_optimizer, lr_factor, set_lr

GAN_LOSS_DEFAULTS: dict[str, Any] = {
    "l1": 1.0,  # ‖x − x̂‖₁ weight (GLC eq. 3, ProGIC eq. 6)
    "mse": 0.0,  # MSE weight (Control-GIC eq. 6)
    "perceptual": 1.0,  # LPIPS-VGG weight
    "adv": 0.8,  # discriminator weight on the generator loss (GLC: 0.8)
    "adaptive": True,  # taming's adaptive weight times `adv`; False → fixed `adv`
    "disc_start": 0,  # iteration from which GAN terms are on
    "codebook": 1.0,  # weight of the codec's vq loss
}


def _detached(x_hat: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
    """Reconstruction(s) for the discriminator step, cut from the generator's graph."""
    return [t.detach() for t in x_hat] if isinstance(x_hat, list) else x_hat.detach()


def psnr(x: Tensor, x_hat: Tensor) -> Tensor:
    """PSNR in dB per image, of x̂ clamped to [0, 1] (what a decoder would show)."""
    mse = ((x - x_hat.clamp(0, 1)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class GANTraining(L.LightningModule):
    """VQGAN pretraining (SPEC §1) and the base of every adversarial stage."""

    LOSS_DEFAULTS = GAN_LOSS_DEFAULTS

    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.codec = codec
        self.stage = stage
        self.weights = stage["loss"]
        self.perceptual = perceptual
        self.discriminator = (
            NLayerDiscriminator(**stage["discriminator"]) if self.weights["adv"] > 0 else None
        )
        self.iteration = 0
        self.last_extras: dict[str, Any] = {}
        self.rd_rows: list[dict[str, float]] = []
        self.rd_images: dict[Any, Tensor] = {}

    # -- optimization ------------------------------------------------------------------
    def trainable_codec_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.codec.parameters() if p.requires_grad]

    def configure_optimizers(self):
        self.lr_at = lr_factor(self.stage["scheduler"], self.stage["max_steps"])
        optimizers = [build_optimizer(self.trainable_codec_parameters(), self.stage["optimizer"],
                                      "optimizer")]
        if self.discriminator is not None:
            optimizers.append(build_optimizer(self.discriminator.parameters(),
                                              self.stage["disc_optimizer"], "disc_optimizer"))
        return optimizers

    def gan_active(self) -> bool:
        return self.discriminator is not None and self.iteration >= self.weights["disc_start"]

    # -- losses ------------------------------------------------------------------------
    def distortion(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted L1 + MSE + LPIPS: the reconstruction term the adaptive weight balances."""
        w = self.weights
        logs: dict[str, Tensor] = {}
        total = x.new_zeros(())
        if w["l1"]:
            logs["l1"] = (x - x_hat).abs().mean()
            total = total + w["l1"] * logs["l1"]
        if w["mse"]:
            logs["mse"] = F.mse_loss(x_hat, x)
            total = total + w["mse"] * logs["mse"]
        if self.perceptual is not None and w["perceptual"]:
            logs["lpips_loss"] = self.perceptual(x, x_hat)
            total = total + w["perceptual"] * logs["lpips_loss"]
        return total, logs

    def adversarial_term(self, rec: Tensor, x_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """λ_adv · w_adaptive · L_G, or zero before `disc_start`."""
        if not self.gan_active():
            return rec.new_zeros(()), {}
        g = generator_loss(self.discriminator(x_hat))
        if self.weights["adaptive"] and self.training and torch.is_grad_enabled():
            w = adaptive_weight(rec, g, self.codec.last_decoder_layer())
        else:
            w = rec.new_ones(())
        return self.weights["adv"] * w * g, {"g_loss": g, "adaptive_weight": w}

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """Total generator loss, its logged parts, and the reconstruction the D step sees."""
        out: CodecOutput = self.codec(x, self.train_point())
        self.last_extras = out.extras  # for callbacks (index statistics)
        rec, logs = self.distortion(x, out.x_hat)
        adv, adv_logs = self.adversarial_term(rec, out.x_hat)
        vq = out.losses.get("vq", rec.new_zeros(()))
        total = rec + adv + self.weights["codebook"] * vq
        logs.update(adv_logs, rec=rec, vq=vq, bpp=(out.bits() / x[0, 0].numel()).mean())
        return total, logs, out.x_hat

    def train_point(self) -> dict[str, Any] | None:
        """The stage's `train_point`; `{"sample": true}` draws a random operating point per
        batch (Control-GIC beyond the paper: ratios sampled per batch rather than fixed)."""
        point = self.stage["train_point"]
        if point and point.get("sample"):
            points = self.codec.operating_points()
            return points[int(torch.randint(len(points), (1,)))]
        return point

    def discriminator_loss(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return hinge_d_loss(self.discriminator(x), self.discriminator(x_hat.detach()))

    # -- the iteration -----------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["image"]
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            set_lr(opt.optimizer, self.lr_at(self.iteration))
        opt_g = optimizers[0]

        # micro-batches: one iteration is still one (global) batch and one optimizer step
        chunks = x.chunk(min(self.stage["micro_batches"], x.shape[0]))
        self.toggle_optimizer(opt_g)
        opt_g.zero_grad(set_to_none=True)
        total, logs, fakes = x.new_zeros(()), {}, []
        for chunk in chunks:
            part, part_logs, x_hat = self.generator_objective(chunk)
            self.manual_backward(part / len(chunks))
            total = total + part.detach() / len(chunks)
            for k, v in part_logs.items():
                logs[k] = logs.get(k, 0) + v.detach() / len(chunks)
            fakes.append(_detached(x_hat))
        self._clip(opt_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        d_loss = x.new_zeros(())
        if self.gan_active():
            opt_d = optimizers[1]
            self.toggle_optimizer(opt_d)
            opt_d.zero_grad(set_to_none=True)
            for chunk, fake in zip(chunks, fakes, strict=True):
                part = self.discriminator_loss(chunk, fake)
                self.manual_backward(part / len(chunks))
                d_loss = d_loss + part.detach() / len(chunks)
            self._clip(opt_d)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
        self.iteration += 1

        logs.update(loss=total, d_loss=d_loss)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in logs.items()}, prog_bar=False)
        self.log("train/loss_step", total.detach(), prog_bar=True, logger=False)
        self.log("iteration", float(self.iteration), prog_bar=True, logger=False)
        if "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float().sum(), reduce_fx="sum")
        if self.iteration >= self.stage["max_steps"]:
            self.trainer.should_stop = True

    def _clip(self, opt: Any) -> None:
        if self.stage["clip_grad_norm"]:
            self.clip_gradients(opt, gradient_clip_val=self.stage["clip_grad_norm"],
                                gradient_clip_algorithm="norm")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.iteration >= self.stage["max_steps"]:  # resumed after the last iteration
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    # -- validation: one RD point per operating point ----------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Sweep the codec's operating points; rows and the first image's reconstructions
        are kept for the RD callback, which draws curves and grids."""
        x = batch["image"]
        pixels = x.shape[-1] * x.shape[-2]
        for i, point in enumerate(self.codec.operating_points()):
            out = self.codec(x, point)
            row = {"point": i, "bpp": float(out.bits().mean()) / pixels,
                   "psnr": float(psnr(x, out.x_hat).mean())}
            if self.perceptual is not None:
                row["lpips"] = float(self.perceptual(x, out.x_hat.clamp(0, 1)))
            self.rd_rows.append(row)
            if batch_idx == 0:
                self.rd_images[i] = out.x_hat[:1].clamp(0, 1).float().cpu()
        if batch_idx == 0:
            self.rd_images["original"] = x[:1].float().cpu()

    def on_validation_epoch_start(self) -> None:
        self.rd_rows, self.rd_images = [], {}

    def on_validation_epoch_end(self) -> None:
        if not self.rd_rows:
            return
        points = sorted({r["point"] for r in self.rd_rows})
        for p in points:
            sel = [r for r in self.rd_rows if r["point"] == p]
            for key in sel[0]:
                if key != "point":
                    self.log(f"rd/{key}/point{p}", sum(r[key] for r in sel) / len(sel), sync_dist=True)
        last = [r for r in self.rd_rows if r["point"] == points[-1]]
        self.log("val/psnr", sum(r["psnr"] for r in last) / len(last), sync_dist=True, prog_bar=True)

    # -- checkpoint contents -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gicl"] = {
            "iteration": self.iteration, "codec": self.codec.config,
            "stage": self.stage.get("_name", ""), "recipe": self.stage.get("_recipe", ""),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.iteration = int(checkpoint.get("gicl", {}).get("iteration", 0))
