"""PatchGAN hinge losses and taming's adaptive generator weight (Esser et al., CVPR 2021,
arXiv 2012.09841, eq. 7: λ = ‖∇_L L_rec‖ / (‖∇_L L_GAN‖ + δ) at the decoder's last layer L)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: Tensor) -> Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """w = ‖∇_L L_rec‖ / (‖∇_L L_G‖ + 1e-4), clamped to [0, 1e4] and detached (taming)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return w.clamp(0.0, max_weight).detach()
