"""LPIPS perceptual loss (Zhang et al., CVPR 2018, arXiv 1801.03924) behind a pretrained-weights
policy.

`lpips` loads its backbone from torchvision's hub cache ($TORCH_HOME/hub/checkpoints) and
downloads it when missing — impossible on offline machines. The policy decides before
loading: `required` fails with the exact file to place, `auto` trains without the term and
says so, `off` never loads it. A file that is present is opened as plain data and checked
against its published SHA-256 (`gicl.loading`) before lpips/torchvision unpickle it: a
hostile or foreign file stops the run under every policy, it is never skipped silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from gicl.errors import UserError
from gicl.loading import hub_checkpoints_dir, verify_hub_weights
from gicl.losses.lpips_choices import BACKBONE_FILES, LPIPS_INPUTS

log = logging.getLogger("gicl")


def backbone_path(net: str) -> Path:
    """Where torchvision (and so lpips) looks for the backbone weights of `net`."""
    return hub_checkpoints_dir() / BACKBONE_FILES[net][0]


def missing_weights_message(net: str) -> str:
    file, url = BACKBONE_FILES[net]
    return (f"LPIPS-{net} needs pretrained weights {backbone_path(net)} ($TORCH_HOME/hub/checkpoints/"
            f"{file}); download {url} there on a machine with internet and copy it")


def load_lpips(net: str = "vgg") -> nn.Module:
    """The real `lpips.LPIPS` network, frozen; UserError naming the file when weights are missing."""
    if not backbone_path(net).is_file():
        raise UserError(missing_weights_message(net))
    verified = verify_hub_weights(backbone_path(net), BACKBONE_FILES[net][1])
    import lpips

    model = lpips.LPIPS(net=net, verbose=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.verified_weights = verified
    return model




class PerceptualLoss(nn.Module):
    """LPIPS(x, x̂) for images in [0, 1], mapped to what LPIPS sees by `input` (LPIPS_INPUTS)."""

    def __init__(self, net: str = "vgg", input: str = "standard") -> None:
        super().__init__()
        self.lpips = load_lpips(net)
        self.scale, self.offset = LPIPS_INPUTS[input]

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.lpips.eval()  # the frozen network never switches to training behaviour
        return self

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return self.lpips(x_hat * self.scale + self.offset, x * self.scale + self.offset).mean()


def perceptual_for_policy(policy: str, weight: float, net: str = "vgg",
                          input: str = "standard") -> tuple[PerceptualLoss | None, str]:
    """Build the loss as the stage's policy says; returns (loss or None, status for the config)."""
    if policy == "off" or weight == 0:
        return None, "off"
    if policy == "auto" and not backbone_path(net).is_file():
        status = f"disabled (perceptual: auto): {missing_weights_message(net)}"
        log.warning("training WITHOUT the LPIPS term: %s", status)
        return None, status
    loss = PerceptualLoss(net, input)
    if not loss.lpips.verified_weights:
        return loss, f"on, with UNVERIFIED backbone weights {backbone_path(net)} (not LPIPS)"
    return loss, f"on (LPIPS-{net}, input {input})"
