"""HyperVQ's training stages after a backbone is trained (Niu et al., arXiv:2512.07192, §3.3).

Stage B (`hyperprior`, options `HyperpriorOptions`): the backbone is frozen (the recipe's
`frozen: [backbone]`) and only the hyperprior trains, on the rate alone,

    L_B = R_ind + R_z        (bits per pixel; eq. 4 and the hyper-latents' −log₂ likelihood)

with the EntropyBottleneck quantiles stepped on `codec.aux_loss()` by the `aux` optimizer.
No discriminator, no distortion: with the backbone fixed the indices, hence x̂, do not move.

Stage C (`joint_rd`, options `JointRDOptions`): everything trains on the GAN base's objective
plus the rate, `L_G + λ_ind R_ind + λ_z R_z` (the codec reports R_ind and R_z in bits per pixel
as `losses["rate_ind"]`, `losses["rate_z"]`), at a reduced learning rate (the recipe's).

Both need a codec whose forward reports those two losses (gicl's `hvq_cgic`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gicl.codecs.base import CodecOutput
from gicl.errors import RecipeError
from gicl.training.base import CodecTraining
from gicl.training.gan import GANTraining

RATE_TERMS = ("rate_ind", "rate_z")


def rate_terms(out: CodecOutput, module: str) -> tuple[Tensor, Tensor]:
    """(R_ind, R_z) in bits per pixel from a codec's output, or a RecipeError naming the need."""
    if not all(k in out.losses for k in RATE_TERMS):
        raise RecipeError(f"training module '{module}' needs a codec with a learned index entropy "
                          "model that reports rate_ind and rate_z (e.g. hvq_cgic)")
    return out.losses["rate_ind"], out.losses["rate_z"]


class HyperpriorTraining(CodecTraining):
    """Stage B: the hyperprior alone, on R_ind + R_z (options: HyperpriorOptions)."""

    # The GAN base's operating-point draw and RD validation sweep serve this stage unchanged
    # (they read only the codec, the stage and the RD buffers): shared, not copied.
    train_point = GANTraining.train_point
    validation_step = GANTraining.validation_step
    on_validation_epoch_start = GANTraining.on_validation_epoch_start
    on_validation_epoch_end = GANTraining.on_validation_epoch_end

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["image"]
        optimizers = self.named_optimizers()
        opt = optimizers["codec"]
        chunks = x.chunk(min(self.stage["micro_batches"], x.shape[0]))
        self.toggle_optimizer(opt)
        opt.zero_grad(set_to_none=True)
        logs: dict[str, Any] = {}
        for chunk in chunks:
            out = self.codec(chunk, self.train_point())
            self.last_output = out
            r_ind, r_z = rate_terms(out, "hyperprior")
            self.manual_backward((r_ind + r_z) / len(chunks))
            for k, v in (("rate_ind", r_ind), ("rate_z", r_z)):
                logs[k] = logs.get(k, 0) + v.detach() / len(chunks)
        self.clip(opt)
        opt.step()
        self.untoggle_optimizer(opt)
        aux = self.aux_step(optimizers)
        if aux is not None:
            logs["aux_loss"] = aux
        logs["loss"] = logs["rate_ind"] + logs["rate_z"]
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, prog_bar=False)
        self.log("train/loss_step", logs["loss"], prog_bar=True, logger=False)
        self.end_iteration(batch)


class JointRDTraining(GANTraining):
    """Stage C: the GAN base's generator objective plus λ_ind R_ind + λ_z R_z
    (options: JointRDOptions)."""

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        total, logs, x_hat = super().generator_objective(x)
        r_ind, r_z = rate_terms(self.last_output, "joint_rd")  # type: ignore[arg-type]
        total = total + self.weights["rate_ind"] * r_ind + self.weights["rate_z"] * r_z
        logs.update(rate_ind=r_ind, rate_z=r_z)
        return total, logs, x_hat

