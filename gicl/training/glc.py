"""GLC stage II: learn the transform coder, the entropy model and the latent code predictor
in the latent space of a frozen VQ-VAE (Jia et al., CVPR 2024, Sec. 4.2, eq. 4–5).

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

The code predictor's learned position embedding has exactly `code_pred_tokens` entries (256 =
a 16×16 latent of a 256² crop), so stage II trains on crops of that size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gicl.codecs.base import Codec
from gicl.codecs.glc import GLC
from gicl.errors import RecipeError
from gicl.losses.perceptual import PerceptualLoss
from gicl.training.context import StageContext
from gicl.training.gan import GANTraining


def code_distortion(codec: GLC, latent: Tensor, latent_hat: Tensor,
                    alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: D_code = α·CE(M_l, CP(l̂)) + ‖l − l̂‖² (mean over positions and channels),
    and its two parts (CE, MSE)."""
    target = codec.latent_indices(latent.detach())  # (B, h·w), the frozen codebook's indices
    logits = codec.code_pred_loss(latent_hat)  # (B, h·w, K)
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none").mean(1)
    mse = (latent.detach() - latent_hat).float().pow(2).flatten(1).mean(1)
    return alpha * ce + mse, ce, mse


class GLCLatentTraining(GANTraining):
    """Stage II (options: GLCLatentOptions). Reuses the GAN base's iteration (micro-batches,
    clipping, logging) and its RD validation; it has no discriminator and no pixel loss."""

    def __init__(self, codec: Codec, stage: dict[str, Any], perceptual: PerceptualLoss | None = None,
                 context: StageContext | None = None) -> None:
        if not isinstance(codec, GLC) or codec.code_pred_loss is None:
            raise RecipeError(f"stages.{stage.get('_name', '?')}: module glc_latent trains a GLC "
                              "codec built with its training parts (codec.name: glc)")
        lambdas = stage["loss"]["lambdas"]
        if len(lambdas) != codec.qualities or any(v <= 0 for v in lambdas):
            raise RecipeError(f"stages.{stage.get('_name', '?')}.loss.lambdas needs one positive λ "
                              f"per quality row ({codec.qualities}), got {lambdas}")
        super().__init__(codec, {**stage, "loss": {**stage["loss"], "adv": 0.0}}, None, context)
        for p in codec.vqgan.parameters():
            p.requires_grad_(False)

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        w = self.weights
        pixels = x.shape[-2] * x.shape[-1]
        rows = torch.arange(x.shape[0], device=x.device) % self.codec.qualities
        total, logs, x_hat = x.new_zeros(()), {}, torch.empty_like(x)
        for q in rows.unique().tolist():
            sel = rows == q
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
