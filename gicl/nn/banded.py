"""3×3 convolutions computed in bands of rows at inference, to bound peak memory.

A full-image 3×3 convolution on CPU (oneDNN) holds its output twice at its peak — it
computes in a blocked layout and reorders into the NCHW result — and a nearest ×2
upsample before it (the VQGAN decoders' `Upsample`) materialises a full-size copy of the
input first. At 1920×1080 one 256-channel map is 2.1 GB, so the decoders' full-resolution
levels peaked at ≈ 4× that. Computed in bands of rows, with one row of halo on each side
taken from the input, the transient is one band; every output value is computed by the same
kernel from the same inputs, and on the CPU it measured bit-identical to the full
convolution (tests/test_banded_conv.py) and faster (a 128-channel 768×512 convolution:
436 ms in 4 MB bands, 455 ms in 16 MB bands, 488–521 ms in one call; 2 threads).

Around that: a residual block's second convolution writes over its input (`over_input`),
a norm → SiLU runs per band with whole-map statistics (`norm_silu`), taming's stride-2
Downsample reads bands of its input (`downsample_conv`), and an upsampling convolution
runs as a 2×2 convolution of the small map with four outputs per channel
(`subpixel_kernel`): 2.25× fewer multiply-adds, no upsampled copy (481 → 260 ms for the
128-channel 384×256 → 768×512 one).

Maps made here keep their input's memory layout (`empty_map`): NCHW, or channels-last where a
network runs so (GLC's VQ-VAE on CPUs), where a band of rows is one contiguous block and a
convolution can be added into a band of another map inside oneDNN (`add_conv_rows`).

Only convolutions reading or writing more than `MIN_BANDED_BYTES` are banded, and only
without autograd (training keeps PyTorch's one-call convolution and its backward) and off
the meta device (FLOP counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

# Convolutions whose output and input are smaller than this (a 128-channel 128×256 map)
# run as one call; larger ones in bands of about BAND_BYTES of their wider side each
# (4 MB: cache-friendlier than 16 MB, measured above; at least 8 rows). Not higher: every
# map above glibc's 32 MB mmap threshold is fresh memory, and a one-call block at 50 MB
# maps (GLC's 128 channels at H/2) page-faulted 384 MB of oneDNN transients and copies,
# against 50 MB banded (GLC at 768×512: 3.6 → 1.9 GB of page faults per compress +
# decompress, measured with getrusage around each block).
MIN_BANDED_BYTES = 16 * 2**20
BAND_BYTES = 4 * 2**20


def add_conv1x1(h: Tensor, conv: nn.Module, x: Tensor) -> Tensor:
    """h += conv(x) in place, band by band on large maps (a 1×1 convolution has the same
    reorder transient); `conv` is a 1×1 nn.Conv2d or nn.Identity (a residual shortcut)."""
    if isinstance(conv, nn.Identity):
        return h.add_(x)
    n, c, height, w = h.shape
    if x.device.type == "meta" or n * c * height * w * h.element_size() < MIN_BANDED_BYTES:
        return h.add_(conv(x))
    rows = _band_rows(c, w, h.element_size())
    for r0 in range(0, height, rows):
        h[:, :, r0 : r0 + rows].add_(conv(x[:, :, r0 : r0 + rows]))
    return h


def downsample_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """conv(pad(x, (0, 1, 0, 1))) for a 3×3 stride-2 `conv` (taming's Downsample), by bands
    of input rows on large maps at inference: neither the padded copy of the whole map nor
    oneDNN's blocked copy of it exists (output row i reads input rows 2i … 2i + 2)."""
    n, c, h, w = x.shape
    if (torch.is_grad_enabled() or x.device.type == "meta"
            or n * c * h * w * x.element_size() < MIN_BANDED_BYTES):
        return conv(F.pad(x, (0, 1, 0, 1)))
    out_h = (h - 2) // 2 + 1
    rows = max(1, _band_rows(c, w, x.element_size()) // 2)  # output rows per band
    out: Tensor | None = None
    for r0 in range(0, out_h, rows):
        r1 = min(r0 + rows, out_h)
        band = x[:, :, 2 * r0 : 2 * r1 + 1]
        band = F.pad(band, (0, 1, 0, 2 * r1 + 1 - 2 * r0 - band.shape[-2]))  # zero row at the end
        y = conv(band)
        if out is None:
            out = empty_map(x, n, y.shape[1], out_h, y.shape[-1], y.dtype)
        out[:, :, r0:r1] = y
    assert out is not None
    return out


# An activation applied to rows [a, b) of a map before a convolution reads them (a norm
# with statistics of the whole map, then SiLU): (rows, a, b, out) -> activated rows, written
# into `out` (a (N, C, b − a, W) view) when given, else into a new tensor.
BandActivation = Callable[[Tensor, int, int, Tensor | None], Tensor]


class Conv3x3(nn.Conv2d):
    """`nn.Conv2d(in, out, 3, padding=1)` (same parameters and state-dict names) whose
    inference on large maps runs in bands; `forward(x, upsample=True)` convolves the nearest
    ×2 upsampling of x without materialising it, `forward(x, pre=f)` convolves f(x) without
    materialising f(x) (see `norm_silu`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def bands(self, x: Tensor, scale: int = 1) -> bool:
        """Whether `forward` on x runs in bands: its output, or the (upsampled, activated)
        input it reads, is large (a decoder's last convolution writes 3 channels but reads
        128 at full resolution)."""
        n, _, h, w = x.shape
        return not (torch.is_grad_enabled() or x.device.type == "meta"
                    or n * self._widest * h * w * scale**2 * x.element_size() < MIN_BANDED_BYTES)

    @property
    def _widest(self) -> int:
        return max(self.in_channels, self.out_channels)

    def forward(  # type: ignore[override]
        self, x: Tensor, upsample: bool = False, pre: BandActivation | None = None,
        into: Tensor | None = None, beside: nn.Conv2d | None = None, accumulate: bool = False,
    ) -> Tensor:
        """into: write the output into this map, which the caller owns and no longer needs:
        x itself (a residual block's second convolution then allocates no full-size map),
        or a dead map of the output's shape (its pages are mapped already: a fresh 200 MB
        map costs 27 ms of page faults here). accumulate: add the output to `into` instead.
        beside: a 1×1 convolution of x (a narrowing block's shortcut) whose output follows
        this one's over x: into must be x, with twice this convolution's output channels,
        and x becomes [conv(pre(x)) | beside(x)]. `upsample` combines with none of them."""
        if upsample and (pre is not None or into is not None):
            raise ValueError("an upsampling Conv3x3 takes neither pre nor into")
        n, _, h, w = x.shape
        channels = self.out_channels * (2 if beside is not None else 1)
        if into is not None and (into.shape != (n, channels, h, w) or into.dtype != x.dtype):
            raise ValueError(f"into must be a {x.dtype} map of shape {(n, channels, h, w)}")
        if (beside is not None and into is not x) or (accumulate and (into is None or into is x)):
            raise ValueError("beside writes over x (into=x); accumulate needs into, not x")
        scale = 2 if upsample else 1
        if not self.bands(x, scale):
            y = super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest") if upsample
                                else x if pre is None else pre(x, 0, x.shape[-2], None))
            return y if into is None else store_into(into, y, x, beside, accumulate)
        rows = _band_rows(self._widest, x.shape[-1] * scale, x.element_size())
        if upsample:
            return _banded_upsample(self, x, max(1, rows // 2))
        return _banded(self, x, rows, pre, into, beside, accumulate)


def store_into(into: Tensor, y: Tensor, x: Tensor, beside: nn.Conv2d | None,
               accumulate: bool) -> Tensor:
    """`Conv3x3.forward`'s `into` semantics for an output y computed in one call."""
    if beside is not None:  # into is x: its shortcut half is computed before x is written
        shortcut = beside(x)
        into[:, : y.shape[1]] = y
        into[:, y.shape[1] :] = shortcut
    elif accumulate:
        into.add_(y)
    else:
        into.copy_(y)
    return into


def norm_silu(norm: nn.GroupNorm, x: Tensor, modulation: tuple[Tensor, Tensor] | None = None
              ) -> BandActivation:
    """SiLU(GroupNorm(x)) by rows, with the statistics of the whole of x; `modulation` (y, b)
    at a power-of-two fraction of x's resolution makes it MoVQ's SpatialNorm (GN·y + b).

    The group means and variances are computed once (`group_moments`), folded with the
    affine parameters into a per-channel scale and shift; the normalised map then exists one
    band at a time. Values agree with the one-call norm to float rounding (≈ 1e-6), not bit
    for bit."""
    n, c, h, w = x.shape
    g = norm.num_groups
    var, mean = group_moments(x, g)
    # per channel: GN(x) = x·scale + shift, one multiply-add per value and one band-size
    # allocation (the band's rows arrive as a strided view of x)
    scale = (torch.rsqrt(var + norm.eps).repeat_interleave(c // g, 1) * norm.weight)[:, :, None, None]
    shift = norm.bias[:, None, None] - mean.repeat_interleave(c // g, 1)[:, :, None, None] * scale
    if modulation is not None:
        s, t = h // modulation[0].shape[-2], w // modulation[0].shape[-1]

    def band(rows: Tensor, a: int, b: int, out: Tensor | None) -> Tensor:
        out = torch.addcmul(shift, rows, scale, out=out)
        if modulation is not None:
            # the modulation's rows for the band's rows, then broadcast over each run of t
            # columns: one band-size pass, no resized copy of y or m
            index = torch.arange(a, b, device=out.device) // s
            y, m = (v.index_select(2, index)[..., None] for v in modulation)
            blocks = out.view(n, c, b - a, w // t, t)
            torch.addcmul(m, blocks, y, out=blocks)
        return F.silu(out, inplace=True)

    return band


def group_moments(x: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """(variance, mean) of each channel group of an (N, C, H, W) map, float32 as
    `F.group_norm`: shape (N, groups).

    Two passes: the mean (PyTorch's vectorised cascade sum; on a channels-last map, column
    sums by BLAS), then the squared deviations from it summed band by band (a band-size
    temporary, reused). `torch.var_mean` gives the same values to float rounding but its
    Welford reduction is not vectorised on the CPU: 141 ms against 33 ms for a 128-channel
    768×512 map on 2 threads (measured here), and the one-pass E[x²] − E[x]² would lose
    digits where a group's mean is large against its spread."""
    n, c, h, w = x.shape
    rows = _band_rows(c, w, x.element_size())
    if channels_last(x):
        # per-channel sums over the pixels, then per group: a (pixels × C) matrix summed by
        # columns as ones @ matrix (BLAS gemv: 7 ms for a 128-channel 768×512 map here,
        # against 16 ms for `sum(1)` and 10 ms for the NCHW row sums)
        def group_sums(t: Tensor) -> Tensor:
            pixels = t.permute(0, 2, 3, 1).reshape(n, -1, c)
            return (pixels.new_ones(pixels.shape[1]) @ pixels).view(n, groups, -1).sum(-1)

        mean = group_sums(x) / (c // groups * h * w)
    else:
        def group_sums(t: Tensor) -> Tensor:
            return t.reshape(n, groups, -1).sum(-1)

        mean = x.reshape(n, groups, -1).mean(-1)
    per_channel = mean.repeat_interleave(c // groups, 1)[:, :, None, None]
    squares = x.new_zeros(n, groups)
    for r0 in range(0, h, rows):
        squares += group_sums((x[:, :, r0 : r0 + rows] - per_channel).square_())
    return squares / (c // groups * h * w), mean


def add_conv_rows(target: Tensor, band: Tensor, conv: nn.Conv2d) -> None:
    """target += conv(band) for a band of rows carrying its halo (no row padding). On
    channels-last CPU maps this is one oneDNN call with a sum post-op: the convolution is
    added into target as it is computed, no band-size output is written and read back
    (PyTorch's own fusion op, the one Inductor emits for conv + add; other layouts fall
    back inside it to conv, then add)."""
    if (target.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu") and channels_last(band)
            and channels_last(target) and band.dtype == target.dtype == conv.weight.dtype):
        torch.ops.mkldnn._convolution_pointwise_.binary(
            target, band, conv.weight, conv.bias, [0, 1], [1, 1], [1, 1], 1, "add", None, None, [], None)
    else:
        target += F.conv2d(band, conv.weight, conv.bias, padding=(0, 1))


if torch.backends.mkldnn.is_available():  # FlopCounterMode (`bench codec`) counts it as the conv it is
    @register_flop_formula(torch.ops.mkldnn._convolution_pointwise_)
    def _conv_add_flops(other_shape: list[int], x_shape: list[int], w_shape: list[int], *args: Any,
                        out_shape: list[int] | None = None, **kwargs: Any) -> int:
        return conv_flop_count(x_shape, w_shape, other_shape, transposed=False)


def channels_last(x: Tensor) -> bool:
    """Whether x is laid out (N, H, W, C) in memory: maps made here then keep that layout."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def empty_map(x: Tensor, n: int, c: int, h: int, w: int, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised (n, c, h, w) map in x's memory layout (NCHW or channels-last)."""
    layout = torch.channels_last if channels_last(x) else torch.contiguous_format
    return torch.empty((n, c, h, w), dtype=dtype or x.dtype, device=x.device, memory_format=layout)


def _band_rows(channels: int, width: int, itemsize: int) -> int:
    return max(8, BAND_BYTES // max(1, channels * width * itemsize))


def _banded(conv: Conv3x3, x: Tensor, rows: int, pre: BandActivation | None,
            out: Tensor | None = None, beside: nn.Conv2d | None = None,
            accumulate: bool = False) -> Tensor:
    """conv(pre(x)) band by band: output rows [r0, r1) need input rows [r0 − 1, r1 + 1),
    zero rows beyond the image as padding=1 would add.

    With `pre`, the activated band lives in one buffer of rows + 2 rows: its last two rows
    are the next band's first two (moved up), so each input row is activated once, not
    (rows + 2)/rows times, and the zero padding rows are written in place.

    `out` is x itself for a convolution written over its input: the next band still reads
    the last input row of this one, so each band's last output row is written only after
    the next band is computed. `beside` (over the input only) appends its 1×1 output of the
    band's own input rows, read before any of them is written. `accumulate` adds the
    output to `out`."""
    n, c, height, w = x.shape
    pending: Tensor | None = None  # (over the input) the previous band's last output row
    buffer = None if pre is None else empty_map(x, n, c, rows + 2, w)  # row i ↔ input row r0 − 1 + i
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        if pre is None or buffer is None:
            band = x[:, :, max(r0 - 1, 0) : r1 + 1]
            if r0 == 0 or r1 == height:  # the image's first or last rows: zero padding
                band = F.pad(band, (0, 0, int(r0 == 0), int(r1 == height)))
        else:
            if r0 == 0:
                buffer[:, :, 0].zero_()
            else:  # rows r0 − 1, r0: activated as the previous band's last two
                buffer[:, :, :2] = buffer[:, :, rows : rows + 2]
            done = 1 if r0 == 0 else 2  # buffer rows already holding activated input rows
            a, b = r0 - 1 + done, min(r1 + 1, height)
            pre(x[:, :, a:b], a, b, buffer[:, :, done : done + b - a])
            if r1 == height:
                buffer[:, :, r1 - r0 + 1].zero_()
            band = buffer[:, :, : r1 - r0 + 2]
        if accumulate:  # (into a map other than x: Conv3x3.forward checked)
            assert out is not None and out is not x
            add_conv_rows(out[:, :, r0:r1], band, conv)
            continue
        y = F.conv2d(band, conv.weight, conv.bias, padding=(0, 1))
        if beside is not None:
            y = torch.cat((y, beside(x[:, :, r0:r1])), 1)
        if out is None:  # the first band's dtype: autocast may have chosen bf16
            out = empty_map(x, n, conv.out_channels, height, w, y.dtype)
        if out is not x:
            out[:, :, r0:r1] = y
            continue
        if pending is not None:
            out[:, :, r0 - 1 : r0] = pending
        out[:, :, r0 : r1 - 1] = y[:, :, :-1]
        pending = y[:, :, -1:]
    assert out is not None
    if pending is not None:
        out[:, :, height - 1 :] = pending
    return out


# Row (and column) weights of the 3×3 kernel's taps on the nearest ×2 upsampling, seen from
# the two input rows u − 1, u that a 2×2 window at u covers: output row 2u − 1 (an odd row:
# taps 0, 1 fall on input row u − 1, tap 2 on u) and output row 2u (tap 0 on u − 1, taps 1,
# 2 on u).
_SUBPIXEL_TAPS = (((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)), ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)))


def subpixel_kernel(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """A 3×3 convolution of the nearest ×2 upsampling of x, as a 2×2 convolution of x
    itself with four outputs per output channel (channel 4c + 2r + s: the pixel at offset
    (r, s) of each 2×2 output block, as `pixel_shuffle` orders them).

    Upsampled pixels repeat their input pixel, so the taps that land on the same input pixel
    add up: 16 multiply-adds per input pixel and channel pair instead of 36, and the
    upsampled map never exists (the sub-pixel view of Shi et al., CVPR 2016)."""
    taps = weight.new_tensor(_SUBPIXEL_TAPS)  # (2 offsets, 2 input rows, 3 taps)
    kernel = torch.einsum("ryk,oikl,sxl->orsiyx", taps, weight, taps)
    return kernel.reshape(-1, weight.shape[1], 2, 2), bias.repeat_interleave(4)


def _banded_upsample(conv: Conv3x3, x: Tensor, rows: int) -> Tensor:
    """conv(upsample_×2(x)) by bands of `rows` input rows with `subpixel_kernel`: windows
    u = lo … hi of input rows [lo − 1, hi] (zero rows beyond the image) give output rows
    2·lo − 1 … 2·hi, of which [2·lo, 2·hi) are the band's; columns alike."""
    n, _, h, w = x.shape
    kernel, bias = subpixel_kernel(conv.weight, conv.bias)
    out: Tensor | None = None
    for lo in range(0, h, rows):
        hi = min(lo + rows, h)
        band = F.pad(x[:, :, max(lo - 1, 0) : hi + 1], (1, 1, int(lo == 0), int(hi == h)))
        y = F.conv2d(band, kernel, bias)  # (n, 4·C, hi − lo + 1, w + 1)
        if out is None:
            out = empty_map(x, n, conv.out_channels, 2 * h, 2 * w, y.dtype)
        blocks = y.view(n, conv.out_channels, 2, 2, hi - lo + 1, w + 1)
        target = out[:, :, 2 * lo : 2 * hi].view(n, conv.out_channels, hi - lo, 2, w, 2)
        for p in (0, 1):  # even output rows come from offset 1 of window t, odd ones from offset 0 of t + 1
            for q in (0, 1):
                target[:, :, :, p, :, q] = blocks[:, :, 1 - p, 1 - q, p : p + hi - lo, q : q + w]
    assert out is not None
    return out
