"""PatchGAN discriminator (Isola et al.; the taming NLayerDiscriminator)."""

from __future__ import annotations

from torch import Tensor, nn

from gicl.nn.blocks import init_weights_normal


class NLayerDiscriminator(nn.Module):
    """C64-C128-C256-... PatchGAN; outputs one logit per overlapping patch."""

    def __init__(self, *, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        init_weights_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """x in [0, 1] → patch logits (inputs are mapped to [−1, 1] as in taming)."""
        return self.main(x * 2.0 - 1.0)
