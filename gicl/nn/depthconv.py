"""DCVC-RT's depthwise-separable blocks, as ProGIC uses them (ProGIC §3.2, Fig. 3b/3c).

Hand-written because DCVC-RT is not a package (its layers live in a research repository
next to CUDA kernels) and ProGIC changes them: ReLU instead of WSiLU (x·σ(4x)), and
per-progressive-stage feature modulation `h·scale_i + bias_i` before each residual addition
in the synthesis transform. The attention module is Cheng et al. 2020's (CompressAI
`AttentionBlock`: `a·σ(b) + x`) with its ResidualUnits replaced by depthwise blocks; it is
written here because CompressAI hard-codes the ResidualUnit inside that class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Stage = int | Tensor | None
"""Which modulation pair to use: None (no modulation), a 1-based stage for the whole batch,
or a (B,) tensor of 1-based stages, one per sample (decodes every stage in one batch)."""


class StageModulation(nn.Module):
    """One (scale, bias) pair per progressive stage: `h·scale_i + bias_i` (ProGIC Fig. 4).

    Initialised to the identity so that an untrained modulation changes nothing.
    """

    def __init__(self, channels: int, num_stages: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_stages, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_stages, channels, 1, 1))

    def forward(self, h: Tensor, stage: Stage) -> Tensor:
        if stage is None:
            raise ValueError("a modulated block needs the progressive stage it decodes")
        if isinstance(stage, int):
            if not 1 <= stage <= self.scale.shape[0]:
                raise ValueError(f"stage {stage} outside 1..{self.scale.shape[0]}")
            i = slice(stage - 1, stage)
            return h * self.scale[i] + self.bias[i]
        i = stage.to(self.scale.device, torch.long) - 1
        return h * self.scale[i] + self.bias[i]


class ChunkAdd(nn.Module):
    """DCVC-RT's "act-then-chunk-add": activate, split channels in two halves, add them
    (4C → 2C without a convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.act(x).chunk(2, dim=1)
        return a + b


class DepthConvBlock(nn.Module):
    """DCVC-RT DepthConvBlock with ReLU: `x + dc(x)` then `h + ffn(h)`.

    dc  = 1×1 → ReLU → depthwise 3×3 → 1×1            (Fig. 3b)
    ffn = 1×1 (C→rC) → ReLU, chunk-2, add (rC→rC/2) → 1×1 (rC/2→C)   (Fig. 3c)
    A 1×1 adaptor first when the channel count changes. With `num_stages`, each branch is
    modulated per stage before its residual addition (used in g_s only).
    """

    def __init__(
        self, in_ch: int, out_ch: int | None = None, *, expansion: int = 4,
        num_stages: int | None = None,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        if expansion % 2:
            raise ValueError("the FFN expansion must be even (chunk-2 halves it)")
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.dc = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 1),
            nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch),
            nn.Conv2d(out_ch, out_ch, 1),
        )
        self.ffn = nn.Sequential(
            nn.Conv2d(out_ch, out_ch * expansion, 1),
            ChunkAdd(),
            nn.Conv2d(out_ch * expansion // 2, out_ch, 1),
        )
        self.mod_dc = StageModulation(out_ch, num_stages) if num_stages else None
        self.mod_ffn = StageModulation(out_ch, num_stages) if num_stages else None

    def forward(self, x: Tensor, stage: Stage = None) -> Tensor:
        if self.adaptor is not None:
            x = self.adaptor(x)
        h = self.dc(x)
        if self.mod_dc is not None:
            h = self.mod_dc(h, stage)
        x = x + h
        h = self.ffn(x)
        if self.mod_ffn is not None:
            h = self.mod_ffn(h, stage)
        return x + h


class DepthConvStack(nn.Module):
    """Blocks applied in sequence, each given the same stage."""

    def __init__(self, blocks: list[DepthConvBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, stage: Stage = None) -> Tensor:
        for block in self.blocks:
            x = block(x, stage)
        return x


class DepthConvAttention(nn.Module):
    """Cheng et al. 2020 attention, `a·σ(b) + x`, with k depthwise blocks per branch.

    Trunk a = k blocks; mask b = k blocks then a 1×1 conv (CompressAI's layout, where each
    ResidualUnit becomes one DepthConvBlock at full width with the FFN expansion).
    """

    def __init__(
        self, channels: int, *, k: int = 3, expansion: int = 4, num_stages: int | None = None
    ) -> None:
        super().__init__()

        def stack() -> DepthConvStack:
            return DepthConvStack([
                DepthConvBlock(channels, expansion=expansion, num_stages=num_stages)
                for _ in range(k)
            ])

        self.trunk = stack()
        self.mask = stack()
        self.mask_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, stage: Stage = None) -> Tensor:
        a = self.trunk(x, stage)
        b = self.mask_out(self.mask(x, stage))
        return a * torch.sigmoid(b) + x
