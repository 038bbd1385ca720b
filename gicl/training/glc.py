"""GLC stages II and III (Jia et al., CVPR 2024, Sec. 4.2–4.3).

Stage II (`GLCLatentTraining`): the transform coder, the entropy model and the latent code
predictor learn in the latent space of a frozen VQ-VAE (eq. 4–5):

    L = R(ŷ) + R(ẑ) + λ_q · D_code(l, l̂) + w_hc · L_vq(z_vq)
    D_code(l, l̂) = α · CE(M_l, CP(l̂)) + ‖l − l̂‖²,   α = 0.5

l = E(x) is the VQ-VAE latent, l̂ the transform coder's reconstruction of it, M_l the indices
of l's nearest codewords in the VQ-VAE codebook (the target), CP the latent code predictor
(`codec.code_pred_loss`, trained by this loss), R in bits per pixel (the official Gaussian
estimate of ŷ plus ẑ's fixed 14 bits per position). Several rate points are learned at once:
image i of a batch trains quality row q = i mod Q with its own λ_q (`loss.lambdas`, one per
row of `q_enc`/`q_dec`), as the paper trains its variable-rate model. The VQ-VAE (encoder,
generator, codebook) is frozen here whatever the recipe says: stage II must leave it
bit-identical, the generator only maps l̂ to pixels for validation.

Stage III (`GLCJointTraining`): joint fine-tune in pixel space with the GAN base,

    L = R(ŷ) + R(ẑ) + λ_q · (L1 + LPIPS + λ_adv·w·L_adv + λ_code · D_code(E(x), E(x̂))) + w_hc · L_vq

where D_code uses the pixel code predictor (`codec.code_pred_pix_loss`) on E(x̂) against the
codebook indices of E(x), λ_code = 0.05; the adaptive weight w balances L_adv against the
pixel terms of the same quality row.

The code predictors' learned position embedding has exactly `code_pred_tokens` entries (256 =
a 16×16 latent of a 256² crop), so stages II and III train on crops of that size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Module

from gicl.codecs.base import Codec
from gicl.codecs.glc import GLC
from gicl.errors import RecipeError
from gicl.losses.perceptual import PerceptualLoss
from gicl.training.context import StageContext
from gicl.training.gan import GANTraining


def code_distortion(codec: GLC, latent: Tensor, latent_hat: Tensor, alpha: float,
                    predictor: Module | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: D_code = α·CE(M_l, CP(l̂)) + ‖l − l̂‖² (mean over positions and channels),
    and its two parts (CE, MSE). CP: `predictor`, by default the latent code predictor."""
    target = codec.latent_indices(latent.detach())  # (B, h·w), the frozen codebook's indices
    logits = (predictor or codec.code_pred_loss)(latent_hat)  # (B, h·w, K)
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none").mean(1)
    mse = (latent.detach() - latent_hat).float().pow(2).flatten(1).mean(1)
    return alpha * ce + mse, ce, mse


def check_glc_stage(codec: Codec, stage: dict[str, Any]) -> None:
    """A GLC with training parts, and one positive λ per quality row."""
    where = f"stages.{stage.get('_name', '?')}"
    if not isinstance(codec, GLC) or codec.code_pred_loss is None:
        raise RecipeError(f"{where}: module {stage['module']} trains a GLC codec built with its "
                          "training parts (codec.name: glc)")
    lambdas = stage["loss"]["lambdas"]
    if len(lambdas) != codec.qualities or any(v <= 0 for v in lambdas):
        raise RecipeError(f"{where}.loss.lambdas needs one positive λ per quality row "
                          f"({codec.qualities}), got {lambdas}")


def quality_rows(x: Tensor, qualities: int) -> list[tuple[int, Tensor]]:
    """(q, mask of the images training row q): image i trains row i mod `qualities`. The rows
    present are 0 … min(Q, B) − 1, known on the host: no read-back from the device per step."""
    rows = torch.arange(x.shape[0], device=x.device) % qualities
    return [(q, rows == q) for q in range(min(qualities, x.shape[0]))]


class GLCLatentTraining(GANTraining):
    """Stage II (options: GLCLatentOptions). Reuses the GAN base's iteration (micro-batches,
    clipping, logging) and its RD validation; it has no discriminator and no pixel loss."""

    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None = None,
                 context: StageContext | None = None) -> None:
        check_glc_stage(codec, stage)
        super().__init__(codec, {**stage, "loss": {**stage["loss"], "adv": 0.0}}, None, context)
        for p in codec.vqgan.parameters():
            p.requires_grad_(False)

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        w = self.weights
        pixels = x.shape[-2] * x.shape[-1]
        total, logs, x_hat = x.new_zeros(()), {}, torch.empty_like(x)
        for q, sel in quality_rows(x, self.codec.qualities):
            out = self.codec(x[sel], {"quality": q})
            self.last_output = out
            d_code, ce, mse = code_distortion(self.codec, out.extras["latent"],
                                              out.extras["latent_hat"], w["alpha"])
            bpp = out.bits() / pixels
            share = sel.sum() / x.shape[0]  # batch mean over all images
            loss = (bpp + w["lambdas"][q] * d_code).mean() + w["hyper_codebook"] * out.losses["z_vq"]
            total = total + share * loss
            for key, value in (("bpp", bpp.mean()), ("code_ce", ce.mean()), ("latent_mse", mse.mean()),
                               ("hyper_vq", out.losses["z_vq"])):
                logs[key] = logs.get(key, 0) + share * value.detach()
            logs[f"bpp_q{q}"] = bpp.mean().detach()
            x_hat[sel] = out.x_hat.detach()
        return total, logs, x_hat


class GLCJointTraining(GANTraining):
    """Stage III (options: GLCJointOptions): the GAN base's generator and discriminator steps,
    with the rate and λ_q-weighted pixel, adversarial and pixel-code terms per quality row."""

    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None = None,
                 context: StageContext | None = None) -> None:
        check_glc_stage(codec, stage)
        super().__init__(codec, stage, perceptual, context)

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        w, codec = self.weights, self.codec
        pixels = x.shape[-2] * x.shape[-1]
        total, logs, x_hat = x.new_zeros(()), {}, torch.empty_like(x)
        for q, sel in quality_rows(x, codec.qualities):
            out = codec(x[sel], {"quality": q})
            self.last_output = out
            rec, parts = self.distortion(x[sel], out.x_hat)
            adv, adv_logs = self.adversarial_term(rec, out.x_hat)
            with torch.no_grad():
                target = codec.vqgan.encoder(x[sel] * 2 - 1)  # E(x): the code target
            d_code, ce, _ = code_distortion(codec, target, codec.vqgan.encoder(out.x_hat * 2 - 1),
                                            w["alpha"], codec.code_pred_pix_loss)
            bpp = out.bits() / pixels
            share = sel.sum() / x.shape[0]
            loss = (bpp.mean() + w["lambdas"][q] * (rec + adv + w["code"] * d_code.mean())
                    + w["codebook"] * out.losses["z_vq"])
            total = total + share * loss
            for key, value in {**parts, **adv_logs, "rec": rec, "bpp": bpp.mean(),
                               "pix_code_ce": ce.mean()}.items():
                logs[key] = logs.get(key, 0) + share * value.detach()
            x_hat[sel] = out.x_hat.detach()
        return total, logs, x_hat
