"""ProGIC's progressive objective (eq. 6–7): every RVQ prefix is trained in one backward.

    L = Σᵢ λᵢ (‖x − x̂ᵢ‖₁ + λ_per·LPIPS(x, x̂ᵢ) + λ_adv·w_i·L_G(x̂ᵢ) + λ_cb·L_cbⁱ)
    λᵢ = p/(N−1) for i < N,  λ_N = 1 − p

x̂ᵢ decodes the prefix sum of the first i codebooks; all N reconstructions come from one
encoder pass (the codec decodes them as one batch). Where the paper is silent:
- L_cbⁱ is the codebook + commitment loss of the i codebooks that x̂ᵢ uses (Σ_{j≤i}), so
  with p = 0 the final stage still trains every codebook.
- The adaptive weight w_i is taming's, computed per stage from that stage's
  reconstruction term and generator loss.
- The discriminator sees every stage's reconstruction, its hinge loss weighted by the same
  λᵢ, so it is trained on the mixture of qualities the generator produces.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gicl.losses.adversarial import hinge_d_loss
from gicl.training.gan import GANTraining


def stage_weights(num_stages: int, p: float) -> list[float]:
    """λᵢ of eq. 7; they sum to 1 for any p in [0, 1]."""
    if num_stages == 1:
        return [1.0]
    return [p / (num_stages - 1)] * (num_stages - 1) + [1.0 - p]


class ProgressiveTraining(GANTraining):
    """ProGIC (Cao et al. 2026, arXiv 2603.02897) eq. 6–7; options: ProgressiveOptions."""

    def stage_term(self, x: Tensor, x_hat: Tensor, codebook_loss: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The bracket of eq. 6 for one stage."""
        rec, logs = self.distortion(x, x_hat)
        adv, adv_logs = self.adversarial_term(rec, x_hat)
        logs.update(adv_logs, rec=rec, vq=codebook_loss)
        return rec + adv + self.weights["codebook"] * codebook_loss, logs

    def generator_objective(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Any]:
        n = self.codec.num_stages
        out = self.codec(x, {"stages": n, "all_stages": True})
        self.last_output = out
        lambdas = stage_weights(n, self.weights["p"])
        total = x.new_zeros(())
        logs: dict[str, Tensor] = {}
        for i, (lam, x_hat) in enumerate(zip(lambdas, out.stage_reconstructions, strict=True), 1):
            if lam == 0:
                continue
            codebooks = torch.stack(out.stage_losses[:i]).sum()
            term, parts = self.stage_term(x, x_hat, codebooks)
            total = total + lam * term
            logs.update({f"stage{i}/{k}": v for k, v in parts.items()})
        logs["bpp"] = (out.bits() / x[0, 0].numel()).mean()
        return total, logs, out.stage_reconstructions

    def discriminator_loss(self, x: Tensor, x_hat: list[Tensor]) -> Tensor:
        lambdas = stage_weights(len(x_hat), self.weights["p"])
        logits_real = self.discriminator(x)
        losses = [lam * hinge_d_loss(logits_real, self.discriminator(r.detach()))
                  for lam, r in zip(lambdas, x_hat, strict=True) if lam > 0]
        return torch.stack(losses).sum()
