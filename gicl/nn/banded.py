"""3×3 convolutions computed in bands of rows at inference, to bound peak memory.

A full-image 3×3 convolution on CPU (oneDNN) holds its output twice at its peak — it
computes in a blocked layout and reorders into the NCHW result — and a nearest ×2
upsample before it (the VQGAN decoders' `Upsample`) materialises a full-size copy of the
input first. At 1920×1080 one 256-channel map is 2.1 GB, so the decoders' full-resolution
levels peaked at ≈ 4× that. Computed in bands of rows, with one row of halo on each side
taken from the input (and upsampled per band), the transient is one band and the upsampled
copy never exists; every output value is computed by the same kernel from the same inputs,
and on the CPU it measured bit-identical to the full convolution (tests/test_banded_conv.py),
at no cost in time (a 128-channel 768×512 convolution: 457–484 ms banded, 488–521 ms full).

Only maps above `MIN_OUTPUT_BYTES` are banded, and only without autograd (training keeps
PyTorch's one-call convolution and its backward) and off the meta device (FLOP counts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Outputs smaller than this (a 128-channel 256×512 map) run as one call; larger ones in
# bands of about BAND_BYTES of output each.
MIN_OUTPUT_BYTES = 64 * 2**20
BAND_BYTES = 16 * 2**20


def add_conv1x1(h: Tensor, conv: nn.Module, x: Tensor) -> Tensor:
    """h += conv(x) in place, band by band on large maps (a 1×1 convolution has the same
    reorder transient); `conv` is a 1×1 nn.Conv2d or nn.Identity (a residual shortcut)."""
    if isinstance(conv, nn.Identity):
        return h.add_(x)
    n, c, height, w = h.shape
    if x.device.type == "meta" or n * c * height * w * h.element_size() < MIN_OUTPUT_BYTES:
        return h.add_(conv(x))
    rows = _band_rows(c, w, 1, h.element_size())
    for r0 in range(0, height, rows):
        h[:, :, r0 : r0 + rows].add_(conv(x[:, :, r0 : r0 + rows]))
    return h


# An activation applied to rows [a, b) of a map before a convolution reads them (a norm
# with statistics of the whole map, then SiLU): (rows, a, b) -> activated rows.
BandActivation = Callable[[Tensor, int, int], Tensor]


class Conv3x3(nn.Conv2d):
    """`nn.Conv2d(in, out, 3, padding=1)` (same parameters and state-dict names) whose
    inference on large maps runs in bands; `forward(x, upsample=True)` convolves the nearest
    ×2 upsampling of x without materialising it, `forward(x, pre=f)` convolves f(x) without
    materialising f(x) (see `norm_silu`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def bands(self, x: Tensor, scale: int = 1) -> bool:
        """Whether `forward` on x runs in bands."""
        n, _, h, w = x.shape
        return not (torch.is_grad_enabled() or x.device.type == "meta"
                    or n * self.out_channels * h * w * scale**2 * x.element_size() < MIN_OUTPUT_BYTES)

    def forward(  # type: ignore[override]
        self, x: Tensor, upsample: bool = False, pre: BandActivation | None = None
    ) -> Tensor:
        scale = 2 if upsample else 1
        if not self.bands(x, scale):
            x = _upsampled(x, scale)
            return super().forward(x if pre is None else pre(x, 0, x.shape[-2]))
        rows = _band_rows(self.out_channels, x.shape[-1] * scale, scale, x.element_size())
        return _banded(self, x, scale, rows, pre)


def norm_silu(norm: nn.GroupNorm, x: Tensor, modulation: tuple[Tensor, Tensor] | None = None
              ) -> BandActivation:
    """SiLU(GroupNorm(x)) by rows, with the statistics of the whole of x; `modulation` (y, b)
    at a power-of-two fraction of x's resolution makes it MoVQ's SpatialNorm (GN·y + b).

    The group means and variances are computed once (`torch.var_mean`, float32 as
    `F.group_norm`), folded with the affine parameters into a per-channel scale and shift; the
    normalised map then exists one band at a time. Values agree with the one-call norm to
    float rounding (≈ 1e-6), not bit for bit."""
    n, c, h, w = x.shape
    g = norm.num_groups
    var, mean = torch.var_mean(x.reshape(n, g, -1), dim=-1, correction=0)
    # per channel: GN(x) = x·scale + shift, one multiply-add per value and one band-size
    # allocation (the band's rows arrive as a strided view of x)
    scale = (torch.rsqrt(var + norm.eps).repeat_interleave(c // g, 1) * norm.weight)[:, :, None, None]
    shift = norm.bias[:, None, None] - mean.repeat_interleave(c // g, 1)[:, :, None, None] * scale
    if modulation is not None:
        s, t = h // modulation[0].shape[-2], w // modulation[0].shape[-1]

    def band(rows: Tensor, a: int, b: int) -> Tensor:
        out = torch.addcmul(shift, rows, scale)
        if modulation is not None:
            y, m = (v[:, :, a // s : (b - 1) // s + 1].repeat_interleave(s, -2)
                    [:, :, a % s : a % s + b - a].repeat_interleave(t, -1) for v in modulation)
            out = torch.addcmul(m, out, y, out=out)
        return F.silu(out, inplace=True)

    return band


def _upsampled(x: Tensor, scale: int) -> Tensor:
    return x if scale == 1 else F.interpolate(x, scale_factor=2.0, mode="nearest")


def _band_rows(channels: int, width: int, scale: int, itemsize: int) -> int:
    rows = max(8, BAND_BYTES // max(1, channels * width * itemsize))
    return rows - rows % scale  # bands start on an input row when upsampling


def _banded(conv: Conv3x3, x: Tensor, scale: int, rows: int, pre: BandActivation | None) -> Tensor:
    """conv(pre(up_scale(x))) band by band: output rows [r0, r1) need (upsampled) input rows
    [r0 − 1, r1 + 1), zero rows beyond the image as padding=1 would add."""
    n, _, h, w = x.shape
    height = h * scale
    out: Tensor | None = None
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - 1, 0), min(r1 + 1, height)  # rows of the (upsampled) input
        lo = a // scale
        band = _upsampled(x[:, :, lo : (b - 1) // scale + 1], scale)[:, :, a - lo * scale : b - lo * scale]
        if pre is not None:
            band = pre(band, a, b)
        if r0 == 0 or r1 == height:  # the image's first or last rows: zero padding
            band = F.pad(band, (0, 0, int(r0 == 0), int(r1 == height)))
        y = F.conv2d(band, conv.weight, conv.bias, padding=(0, 1))
        if out is None:  # the first band's dtype: autocast may have chosen bf16
            out = y.new_empty(n, conv.out_channels, height, w * scale)
        out[:, :, r0:r1] = y
    assert out is not None
    return out
