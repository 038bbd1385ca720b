"""The shared GAN training base: generator (the codec) and PatchGAN discriminator trained
with manual optimization, hinge loss, taming's adaptive weight, `disc_start`, clipping.

    L_G = Σ w·rec + λ_adv · w_adaptive · (−D(x̂)) + λ_cb · L_vq,   w_adaptive = ‖∇L_rec‖/‖∇L_G‖
    L_D = ½ (relu(1 − D(x)) + relu(1 + D(x̂)))

(taming-transformers, Esser et al., CVPR 2021, arXiv 2012.09841: eq. 6–7 with the hinge loss of
its code; GLC eq. 3).
Iterations drive `disc_start`, the LR schedule and the end of the stage (see
gicl.training.base). Subclasses override `generator_objective` (ProGIC's λᵢ-weighted
sum, ...); modules hold losses and optimization, the codec holds the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gicl.codecs.base import Codec, CodecOutput
from gicl.evaluation.file_points import FilePoints, rd_means
from gicl.images import from_uint8
from gicl.losses.adversarial import adaptive_weight, generator_loss, hinge_d_loss
from gicl.losses.perceptual import PerceptualLoss
from gicl.losses.reconstruction import to_pixel_range
from gicl.nn.discriminator import NLayerDiscriminator
from gicl.training.base import CodecTraining
from gicl.training.context import StageContext


def _detached(x_hat: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
    """Reconstruction(s) for the discriminator step, cut from the generator's graph."""
    return [t.detach() for t in x_hat] if isinstance(x_hat, list) else x_hat.detach()


class GANTraining(CodecTraining):
    """VQGAN pretraining and the base of every adversarial stage (options: GANOptions)."""

    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None = None,
                 context: StageContext | None = None) -> None:
        super().__init__(codec, stage, perceptual, context)
        self.weights = stage["loss"]
        self.discriminator = (
            NLayerDiscriminator(**stage["discriminator"]) if self.weights["adv"] > 0 else None
        )

    def parameter_sets(self) -> dict[str, list[nn.Parameter]]:
        """codec, disc (with a discriminator), aux (codecs with an aux loss): the order of
        checkpoints written before optimizers had names is kept (codec, disc)."""
        sets = super().parameter_sets()
        aux = sets.pop("aux", None)
        if self.discriminator is not None:
            sets["disc"] = list(self.discriminator.parameters())
        if aux:
            sets["aux"] = aux
        return sets

    def gan_active(self) -> bool:
        return self.discriminator is not None and self.iteration >= self.weights["disc_start"]

    # -- losses ------------------------------------------------------------------------
    def distortion(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted L1 + MSE + LPIPS: the reconstruction term the adaptive weight balances.
        L1 and MSE are taken on `loss.pixel_range` (gicl.losses.reconstruction); LPIPS maps
        its input itself (`loss.lpips.input`)."""
        w = self.weights
        logs: dict[str, Tensor] = {}
        total = x.new_zeros(())
        if w["l1"] or w["mse"]:
            xs, xs_hat = (to_pixel_range(t, w["pixel_range"]) for t in (x, x_hat))
        if w["l1"]:
            logs["l1"] = (xs - xs_hat).abs().mean()
            total = total + w["l1"] * logs["l1"]
        if w["mse"]:
            logs["mse"] = F.mse_loss(xs_hat, xs)
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
        self.last_output = out  # for callbacks (index statistics)
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
        optimizers = self.named_optimizers()
        opt_g = optimizers["codec"]

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
        self.clip(opt_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        d_loss = x.new_zeros(())
        if self.gan_active():
            opt_d = optimizers["disc"]
            self.toggle_optimizer(opt_d)
            opt_d.zero_grad(set_to_none=True)
            for chunk, fake in zip(chunks, fakes, strict=True):
                part = self.discriminator_loss(chunk, fake)
                self.manual_backward(part / len(chunks))
                d_loss = d_loss + part.detach() / len(chunks)
            self.clip(opt_d)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
        aux = self.aux_step(optimizers)
        if aux is not None:
            logs["aux_loss"] = aux

        logs.update(loss=total, d_loss=d_loss)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in logs.items()}, prog_bar=False)
        self.log("train/loss_step", total.detach(), prog_bar=True, logger=False)
        self.end_iteration(batch)

    # -- validation: one RD point per operating point ----------------------------------
    def on_validation_epoch_start(self) -> None:
        self.rd_rows, self.rd_images = [], {}
        with torch.inference_mode(False):  # update() may rebuild buffers training reuses
            self.rd_files = FilePoints(self.codec)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Code every image at each of the codec's operating points into a real container
        and decode it (gicl.evaluation.file_points): rows hold the file bpp and the metrics
        `gicl eval` reports; the first image's decoded pixels are kept for the RD callback."""
        x = batch["image"]
        for i, point in enumerate(self.codec.operating_points()):
            for j, image in enumerate(x):
                row, rec = self.rd_files.measure(image[None], point)
                self.rd_rows.append({"point": i, "image": batch_idx * len(x) + j, **row})
                if batch_idx == 0 and j == 0:
                    self.rd_images[i] = from_uint8(rec)
        if batch_idx == 0:
            self.rd_images["original"] = x[:1].float().cpu()

    def on_validation_epoch_end(self) -> None:
        if not self.rd_rows:
            return
        means = rd_means(self.rd_rows)
        # the logger's step for these scalars: the iteration, the step the RD images carry
        self.log("step", float(self.iteration))
        for p, values in means.items():
            for key, value in values.items():
                self.log(f"rd/{key}/point{p}", value, sync_dist=True)
        self.log("val/psnr", means[max(means)]["psnr"], sync_dist=True, prog_bar=True)
