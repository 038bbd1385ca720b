"""DCVC-RT's depthwise-separable blocks, as ProGIC uses them (ProGIC §3.2, Fig. 3b/3c).

Hand-written because DCVC-RT is not a package (its layers live in a research repository
next to CUDA kernels) and ProGIC changes them: ReLU instead of WSiLU (x·σ(4x)), and
per-progressive-stage feature modulation `h·scale_i + bias_i` before each residual addition
in the synthesis transform. The attention module is Cheng et al. 2020's (CompressAI
`AttentionBlock`: `a·σ(b) + x`) with its ResidualUnits replaced by depthwise blocks; it is
written here because CompressAI hard-codes the ResidualUnit inside that class.

Inference path (`fused`, used whenever autograd is off and the stage is one integer): the
same arithmetic on channels-last activations viewed as (pixels, channels) matrices, so that
every 1×1 convolution is one GEMM with its bias in the output buffer, the residual additions
and the per-stage modulation `h·s + b` are folded into that GEMM (the modulation into the
weights: (D·Wᵀ + b₃)·s + b = D·(W·s)ᵀ + (b₃·s + b)), and the FFN's 4C-wide hidden tensor
is computed in row tiles that stay in the CPU's L2 cache instead of going through memory
three times (bias, ReLU, chunk-add). PyTorch runs 1×1 convolutions on one CPU thread as
im2col + GEMM with a separate bias pass and no activation fusion; on ProGIC's widths those
memory passes cost as much as the GEMMs. The reference path (`fused = False`) is kept: the
training graph uses it, and tests compare the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Stage = int | Tensor | None
"""Which modulation pair to use: None (no modulation), a 1-based stage for the whole batch,
or a (B,) tensor of 1-based stages, one per sample (decodes every stage in one batch)."""


FFN_TILE_BYTES = 1 << 20
"""Bytes of the FFN's hidden tile on one CPU thread: 1 MiB sits in a core's L2 (2 MiB on
Sapphire Rapids, 512 KiB–1 MiB elsewhere) next to the GEMM's operands. Several threads and
GPUs take one tile."""


def rows(x: Tensor) -> Tensor:
    """(N, C, H, W) → (N·H·W, C): a view when x is channels-last, else one copy into it."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def unrows(m: Tensor, like: Tensor) -> Tensor:
    """(N·H·W, C) → a channels-last (N, C, H, W) view with the batch and size of `like`."""
    n, _, h, w = like.shape
    return m.view(n, h, w, m.shape[1]).permute(0, 3, 1, 2)


def pointwise(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 1×1 convolution as one GEMM, bias in the output: (N·H·W, C_out) rows."""
    return torch.addmm(conv.bias, rows(x), conv.weight.flatten(1).t())


class Conv1x1(nn.Conv2d):
    """A 1×1 convolution that runs as one GEMM on channels-last input when autograd is off
    (the fused inference path's layout); otherwise, and on contiguous input, `nn.Conv2d`."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        if (torch.is_grad_enabled() or autocasting(x)
                or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        return unrows(pointwise(x, self), x)


def autocasting(x: Tensor) -> bool:
    """Autocast is on for x's device (devices without autocast, e.g. meta: never)."""
    kind = x.device.type
    return torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind)


def use_fused(module: nn.Module, x: Tensor, stage: Stage) -> bool:
    """The fused inference path applies: enabled, autograd off, one stage for the batch,
    no autocast (its GEMMs write into buffers of the input's dtype; under autocast, e.g. a
    bf16-mixed validation step, the reference path runs)."""
    return (module.fused and not torch.is_grad_enabled() and not isinstance(stage, Tensor)
            and not autocasting(x))


def set_fused(module: nn.Module, fused: bool) -> None:
    """Switch every depthwise block and attention under `module` to the fused inference
    path (True) or the reference path (False)."""
    for m in module.modules():
        if isinstance(m, (DepthConvBlock, DepthConvAttention)):
            m.fused = fused


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


    def fold(self, conv: nn.Conv2d, stage: Stage) -> tuple[Tensor, Tensor]:
        """(weight (C_out, C_in), bias) of `conv` followed by this modulation at one stage."""
        w, b = conv.weight.flatten(1), conv.bias
        if stage is None:
            raise ValueError("a modulated block needs the progressive stage it decodes")
        if not 1 <= stage <= self.scale.shape[0]:
            raise ValueError(f"stage {stage} outside 1..{self.scale.shape[0]}")
        s, m = self.scale[stage - 1].flatten(), self.bias[stage - 1].flatten()
        return w * s[:, None], b * s + m


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
        self.adaptor = Conv1x1(in_ch, out_ch) if in_ch != out_ch else None
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
        self.fused = True

    def forward(self, x: Tensor, stage: Stage = None) -> Tensor:
        if use_fused(self, x, stage):
            return self.forward_fused(x, stage)
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

    def branch_out(
        self, conv: nn.Conv2d, mod: StageModulation | None, stage: Stage
    ) -> tuple[Tensor, Tensor]:
        """(weight (C_out, C_in), bias) of a branch's last 1×1 conv, modulation folded in."""
        if mod is None:
            return conv.weight.flatten(1), conv.bias
        return mod.fold(conv, stage)

    def forward_fused(self, x: Tensor, stage: Stage) -> Tensor:
        """The inference path: same function as `forward`, channels-last out."""
        x_rows = pointwise(x, self.adaptor) if self.adaptor is not None else rows(x)
        conv1, dw, conv3 = self.dc[0], self.dc[2], self.dc[3]
        t = torch.addmm(conv1.bias, x_rows, conv1.weight.flatten(1).t()).relu_()
        d = rows(F.conv2d(unrows(t, x), dw.weight, dw.bias, padding=1, groups=dw.groups))
        w3, b3 = self.branch_out(conv3, self.mod_dc, stage)
        # the block's output goes into t's memory (dead after the depthwise conv): one
        # allocation less; x stays unchanged (an attention reads it twice)
        out = torch.add(x_rows, b3, out=t)
        torch.addmm(out, d, w3.t(), out=out)
        up, down = self.ffn[0], self.ffn[2]
        w_up = up.weight.flatten(1).t()
        w_down, b_down = self.branch_out(down, self.mod_ffn, stage)
        half = w_down.shape[1]
        # row tiles on one CPU thread only: with several, every op on a tile is a parallel
        # region ending in a barrier, and on a shared machine a barrier waits for a thread
        # that lost its core (2 threads, ProGIC-s at 768×512 under load: 33 s tiled, 17 s not)
        tiled = not out.is_cuda and torch.get_num_threads() == 1
        tile = max(1, FFN_TILE_BYTES // (4 * 2 * half)) if tiled else out.shape[0]
        for part in out.split(tile):  # row tiles of `out`, updated in place
            h = torch.addmm(up.bias, part, w_up).relu_()
            hidden = h[:, :half].add_(h[:, half:])
            # out= rather than addmm_: the same kernel, and FLOP counters see it
            torch.addmm(part.add_(b_down), hidden, w_down.t(), out=part)
        return unrows(out, x)


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
        self.mask_out = Conv1x1(channels, channels)
        self.fused = True

    def forward(self, x: Tensor, stage: Stage = None) -> Tensor:
        if use_fused(self, x, stage):
            b = pointwise(self.mask(x, stage), self.mask_out).sigmoid_()
            # on rows: the output is channels-last whatever x's layout (y_hat comes contiguous)
            return unrows(torch.addcmul(rows(x), rows(self.trunk(x, stage)), b), x)
        a = self.trunk(x, stage)
        b = self.mask_out(self.mask(x, stage))
        return a * torch.sigmoid(b) + x
