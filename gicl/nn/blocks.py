"""taming-transformers style convolutional blocks (VQGAN, MoVQ, Control-GIC).

Written here rather than imported because taming is not a maintained package and its
modules import its training script; the shapes follow the taming/MoVQ code so parameter
counts match the papers.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gicl.nn.banded import (
    BandActivation,
    Conv3x3,
    add_conv1x1,
    downsample_conv,
    norm_silu,
    store_into,
)
from gicl.nn.heap import release_free_heap


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that also takes a group holding a single value.

    A 1×1 latent in a model with one channel per group (the ch-32 smoke models, at H/16
    for a 1×1 to 16×16 image) leaves each group one value; `F.group_norm` then raises
    "Expected more than 1 value per channel". The normalisation is still defined there:
    x − mean is exactly 0, so the output is the bias, which is returned. Every other input
    runs the unchanged kernel."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] // self.num_groups * x[0, 0].numel() > 1:
            return super().forward(x)
        return torch.zeros_like(x, dtype=self.bias.dtype) + self.bias.view(1, -1, 1, 1)


def group_norm(channels: int) -> GroupNorm:
    return GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditioned norm: GN(f)·conv1x1(zq) + conv1x1(zq), zq resized to f."""

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.conv_y = nn.Conv2d(zq_channels, channels, 1)
        self.conv_b = nn.Conv2d(zq_channels, channels, 1)

    def modulation(self, f: Tensor, zq: Tensor) -> tuple[Tensor, Tensor] | None:
        """(y, b) at zq's resolution when it is f's divided by powers of two, else None."""
        (h, w), (zh, zw) = f.shape[-2:], zq.shape[-2:]
        s, t = h // zh, w // zw
        if (s, t) != (h / zh, w / zw) or s & (s - 1) or t & (t - 1) or min(s, t) < 1:
            return None
        return self.conv_y(zq), self.conv_b(zq)

    def forward(self, f: Tensor, zq: Tensor) -> Tensor:
        """The 1×1 convs commute with nearest resizing (both act per position), so they run
        at the smaller of the two resolutions; an integer upscale is then a broadcast inside
        one multiply-add instead of two full-size copies of the resized latent."""
        (h, w), (zh, zw) = f.shape[-2:], zq.shape[-2:]
        s, t = h // zh, w // zw
        # power-of-two factors: where nearest resizing's float index arithmetic is exact
        up = (s, t) == (h / zh, w / zw) and s & (s - 1) == 0 and t & (t - 1) == 0 and min(s, t) > 0
        if not up:
            zq = F.interpolate(zq, size=(h, w), mode="nearest")
        y, b = self.conv_y(zq), self.conv_b(zq)
        normed = self.norm(f)
        # without autograd the product is written over the fresh normed map (the same kernel:
        # same values) instead of into a third full-size tensor beside f and normed
        into = inference() and normed.dtype == torch.result_type(normed, y)
        if not up or (h, w) == (zh, zw):
            return torch.addcmul(b, normed, y, out=normed) if into else torch.addcmul(b, normed, y)
        # (B, C, zh, s, zw, t) views: each latent position covers an s×t block of f
        n, c = normed.shape[:2]
        if normed.is_contiguous(memory_format=torch.channels_last):
            blocks = normed.permute(0, 2, 3, 1).view(n, zh, s, zw, t, c)
            y, b = (v.permute(0, 2, 3, 1)[:, :, None, :, None] for v in (y, b))
            out = torch.addcmul(b, blocks, y, out=blocks) if into else torch.addcmul(b, blocks, y)
            return out.reshape(n, h, w, c).permute(0, 3, 1, 2)
        blocks = normed.view(n, c, zh, s, zw, t)
        y, b = (v[:, :, :, None, :, None] for v in (y, b))
        out = torch.addcmul(b, blocks, y, out=blocks) if into else torch.addcmul(b, blocks, y)
        return out.reshape(n, c, h, w)


class Norm(nn.Module):
    """GroupNorm(32), or SpatialNorm when the block is conditioned on a quantized latent."""

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.spatial = zq_channels is not None
        self.norm = SpatialNorm(channels, zq_channels) if self.spatial else group_norm(channels)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        return self.norm(x, zq) if self.spatial else self.norm(x)

    def banded(self, x: Tensor, zq: Tensor | None = None) -> BandActivation | None:
        """SiLU(self(x)) by rows for a banded convolution (None where not supported)."""
        if not self.spatial:
            return norm_silu(self.norm, x)
        modulation = self.norm.modulation(x, zq)
        return None if modulation is None else norm_silu(self.norm.norm, x, modulation)


def fused_activations(conv: Conv3x3, x: Tensor) -> bool:
    """Whether a block's norm → SiLU → conv runs band by band on x (large float32 maps at
    inference): the normalised map is then never held whole."""
    return (conv.bands(x) and x.dtype == torch.float32  # (bands: never on the meta device)
            and not torch.is_autocast_enabled(x.device.type))


def norm_silu_conv(norm: nn.Module, conv: Conv3x3, x: Tensor, zq: Tensor | None = None,
                   dropout: nn.Module | None = None, over_input: bool = False,
                   into: Tensor | None = None, beside: nn.Conv2d | None = None,
                   accumulate: bool = False) -> Tensor:
    """conv(dropout(SiLU(norm(x)))), the unit every taming-style block and network tail is
    built of; `norm` is a `Norm` (zq: SpatialNorm's latent) or a plain GroupNorm.

    Large float32 maps at inference run band by band (`gicl.nn.banded`): the normalised map
    never exists whole, and a 3-channel output convolution reads its 128-channel input in
    bands too; `over_input` (x is the caller's own, fresh map) then writes the result over
    x, `into` (a dead map of the output's shape) into that. Elsewhere (training, small maps,
    autocast) the plain modules, the SiLU in place over the norm's fresh output when nothing
    records a graph; there `over_input` and `into` are only memory hints.

    `beside` and `accumulate` are not hints (see `Conv3x3.forward`): x becomes
    [result | beside(x)], or `into` += result, on every path."""
    target = x if over_input or beside is not None else into
    if fused_activations(conv, x) and not (dropout is not None and dropout.training):
        pre = norm.banded(x, zq) if isinstance(norm, Norm) else norm_silu(norm, x)
        if pre is not None:
            return conv(x, pre=pre, into=target, beside=beside, accumulate=accumulate)
    h = F.silu(norm(x, zq) if isinstance(norm, Norm) else norm(x), inplace=inference())
    if beside is None and not accumulate:
        del x  # an x passed straight from the previous conv is freed before this conv allocates
        return conv(h if dropout is None else dropout(h))
    assert target is not None
    return store_into(target, conv(h if dropout is None else dropout(h)), x, beside, accumulate)


class ResnetBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int | None = None, *, dropout: float = 0.0,
        zq_channels: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = Norm(in_channels, zq_channels)
        self.conv1 = Conv3x3(in_channels, out_channels)
        self.norm2 = Norm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv3x3(out_channels, out_channels)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, zq: Tensor | None = None, spare: Tensor | None = None,
                consume: bool = False) -> Tensor:
        """At inference (see `run_unit`): spare, a dead map of conv1's output shape for
        conv1 to write into when it runs in bands; consume, x is the caller's to give up.

        A consumed x of twice the output's channels with a 1×1 shortcut (the decoders'
        first block after a widening upsample: 256 → 128 channels at full resolution, 2.1 GB
        at 1080p) is written over: x = [conv1 output | shortcut(x)], conv2's output is added
        into the shortcut half, which is returned. The block then allocates no full-size
        map, and the first half is the next block's spare."""
        if self.narrows_over(x, consume):
            c = self.conv1.out_channels
            norm_silu_conv(self.norm1, self.conv1, x, zq, beside=self.nin_shortcut)
            return norm_silu_conv(self.norm2, self.conv2, x[:, :c], zq, self.dropout,
                                  into=x[:, c:], accumulate=True)
        into = spare if spare is not None and fused_activations(self.conv1, x) else None
        del spare  # unused: freed now, not held through the block
        # conv1's output is passed on directly (no name holds it): conv2 writes over it
        h = norm_silu_conv(self.norm2, self.conv2,
                           norm_silu_conv(self.norm1, self.conv1, x, zq, into=into),
                           zq, self.dropout, over_input=True)
        return add_conv1x1(h, self.nin_shortcut, x) if inference() else self.nin_shortcut(x) + h

    def narrows_over(self, x: Tensor, consume: bool) -> bool:
        """Whether `forward(x, consume=consume)` writes over x (see there)."""
        return (consume and inference() and isinstance(self.nin_shortcut, nn.Conv2d)
                and x.shape[1] == 2 * self.conv1.out_channels and x.is_contiguous()
                and fused_activations(self.conv1, x) and not self.dropout.training)


def run_unit(unit: nn.Module, h: Tensor, zq: Tensor | None, spares: list[Tensor]) -> Tensor:
    """One unit of a decoder level (`Level.units`) on h, which the caller gives up: it
    rebinds h to the result (`h = run_unit(unit, h, zq, spares)`, never `level(h)`, which
    would hold the level's input to its end) and reads h no more.

    At inference a res block may then write over its input (`ResnetBlock.forward`,
    consume), and the map a res block has finished with — its input, or the half of it a
    narrowing block left — waits in `spares` (a list the caller empties after the level)
    to become the next res block's conv1 output where that runs in bands: its pages are
    mapped already (a fresh map costs page faults: 41 ms per 200 MB here), and at full
    resolution a level holds two maps' worth of memory, not three."""
    if not (isinstance(unit, ResnetBlock) and inference()):
        spares.clear()
        return unit(h, zq)
    out = unit(h, zq, spare=_spare_for(unit, h, spares), consume=True)
    start = h.data_ptr()
    if start <= out.data_ptr() < start + h.numel() * h.element_size():
        spares.append(h[:, : out.shape[1]])  # a narrowing block left out in h's second half
    else:
        spares.append(h)
    return out


def _spare_for(block: ResnetBlock, x: Tensor, spares: list[Tensor]) -> Tensor | None:
    """The dead map for block's conv1 output on x, if it will use one; an unusable spare is
    dropped here rather than held through the block."""
    spare = spares.pop() if spares else None
    n, _, height, width = x.shape
    if (spare is None or not fused_activations(block.conv1, x) or spare.dtype != x.dtype
            or spare.shape != (n, block.conv1.out_channels, height, width)):
        return None
    return spare


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all positions (taming), via SDPA.

    `window` > 0 restricts attention, at inference only, to window×window tiles: exact global
    attention is quadratic in pixels, so large inputs use windows (GLC's official code uses
    32×32 latent windows). Where a side is not a multiple of the window, the last tile is
    shifted back to end at the border (overlapping its neighbour) instead of zero-padding, so
    every query attends over a full window of real positions; positions covered twice take
    the earlier tile's output. Training crops are small and always use exact attention.
    """

    def __init__(self, channels: int, *, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm = Norm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.window = 0

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        h = self.norm(x, zq)
        _, _, hh, ww = h.shape
        win = self.window
        if win <= 0 or self.training or (hh <= win and ww <= win):
            return x + self.proj_out(attend(self.q(h), self.k(h), self.v(h)))
        # one row of windows at a time: q, k, v and their tiled copies exist for one strip
        # (at 1080p a 512-channel H/4 map is 267 MB, and all of them at once were ≈ 3 GB)
        cols, tile_c, off_c = _window_tiles(ww, win, x.device)
        b, c = x.shape[:2]
        nw, tw = cols.shape
        size = min(hh, win)
        # Positions two tiles cover take the earlier tile's output, so an overlapping tile
        # queries only the positions it outputs (against all of its keys): the last strip
        # its new rows, the last tile of a strip its `skip`-th column on. The same outputs;
        # at 1080p Control-GIC's H/8 attention then does 7.9 tiles' work instead of 12.
        skip = nw * tw - ww
        out = torch.empty_like(x)
        done = 0  # rows already output
        for start in _window_starts(hh, win):
            strip = h[:, :, start : start + size]

            def tiles(t: Tensor) -> Tensor:  # (b, c, r, W) -> (b, nw, c, r, tw)
                return t[:, :, :, cols].permute(0, 3, 1, 2, 4)

            q = tiles(self.q(strip[:, :, done - start :]))
            k, v = tiles(self.k(strip)), tiles(self.v(strip))
            rows = q.shape[3]
            o = q.new_empty(b, nw, c, rows, tw)
            whole = nw if skip == 0 else nw - 1  # tiles queried at every column
            if whole:
                o[:, :whole] = attend(*(t[:, :whole].reshape(b * whole, c, -1, tw) for t in (q, k, v))
                                      ).view(b, whole, c, rows, tw)
            if skip:
                o[:, -1, :, :, skip:] = attend(q[:, -1, :, :, skip:], k[:, -1], v[:, -1])
            o = o.permute(0, 2, 3, 1, 4)[:, :, :, tile_c, off_c]
            out[:, :, done : start + size] = x[:, :, done : start + size] + self.proj_out(o)
            done = start + size
        return out


def _window_starts(n: int, win: int) -> list[int]:
    """Tile starts on one side of length n: 0, win, 2·win, … with the last one moved back to
    n − win, so tiles never leave the image (plain ints: the meta device has no values)."""
    size = min(n, win)
    starts = list(range(0, n - size + 1, size))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


def _window_tiles(n: int, win: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Tiles of one side of length n (`_window_starts`): positions per tile (tiles, size), and
    for every position the tile that outputs it and its offset there."""
    size = min(n, win)
    starts = _window_starts(n, win)
    start = torch.tensor(starts, device=device)
    pos = torch.arange(n, device=device)
    tile = (pos // size).clamp_max(len(starts) - 1)
    return start[:, None] + torch.arange(size, device=device), tile, pos - start[tile]


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(qᵀk/√c)·v over all positions of (b, c, h, w) maps, via SDPA; k and v may
    cover other positions than q (the output has q's).

    SDPA's memory-efficient (flash) CPU kernel needs a unit-stride last dimension (a
    transposed view silently falls back to the quadratic math kernel): (b, 1, hw, c) is a free
    view of a channels-last map and one copy of an NCHW one. The output has the input's
    memory format.
    """
    b, c, h, w = q.shape
    channels_last = q.is_contiguous(memory_format=torch.channels_last)
    q, k, v = (t.permute(0, 2, 3, 1).reshape(b, 1, -1, c).contiguous() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v).view(b, h, w, c).permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


def inference() -> bool:
    """No autograd graph is recorded: in-place reuse of intermediate tensors is safe."""
    return not torch.is_grad_enabled()


INFERENCE_DTYPES = ("float32", "bfloat16")


def network_precision(
    x: Tensor, inference_dtype: str, training: bool
) -> contextlib.AbstractContextManager[None]:
    """Autocast context for a codec's analysis/synthesis networks at inference.

    "bfloat16" (opt-in) runs them under bf16 autocast: AMX/AVX512-BF16 on recent x86 CPUs,
    tensor cores on GPUs. Anything that selects symbols or entropy tables must stay outside
    it (or in float32/float64 explicitly), so that a decoder on another machine rebuilds the
    same symbols; training keeps the trainer's own precision.
    """
    if inference_dtype != "bfloat16" or training or not torch.amp.is_autocast_available(x.device.type):
        return contextlib.nullcontext()  # e.g. the meta device `gicl info` counts FLOPs on
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


def set_attention_window(module: nn.Module, window: int) -> None:
    """Switch every AttnBlock in `module` to windowed (window > 0) or global (0) attention."""
    for m in module.modules():
        if isinstance(m, AttnBlock):
            m.window = window


class Downsample(nn.Module):
    """Stride-2 3×3 conv with taming's asymmetric (0, 1, 0, 1) padding (by bands of rows
    on large maps at inference: `gicl.nn.banded.downsample_conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return downsample_conv(self.conv, x)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv (at inference on large maps, band by band without the
    upsampled copy: `gicl.nn.banded`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.conv.bands(x, 2):  # a large output next: freed heap pages back first (the
            release_free_heap()    # lower levels leave ≈ 100 MB there at 1080p)
        return self.conv(x, upsample=True)


class MidBlock(nn.Module):
    """Res–Attn–Res at the bottleneck."""

    def __init__(self, channels: int, *, dropout: float = 0.0, zq_channels: int | None = None):
        super().__init__()
        self.block_1 = ResnetBlock(channels, dropout=dropout, zq_channels=zq_channels)
        self.attn_1 = AttnBlock(channels, zq_channels=zq_channels)
        self.block_2 = ResnetBlock(channels, dropout=dropout, zq_channels=zq_channels)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x, zq), zq), zq)


class Level(nn.Module):
    """One resolution level: res blocks, each followed by attention where requested."""

    def __init__(
        self, in_channels: int, out_channels: int, *, num_blocks: int, attention: bool,
        dropout: float = 0.0, zq_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(num_blocks):
            self.block.append(
                ResnetBlock(in_channels, out_channels, dropout=dropout, zq_channels=zq_channels)
            )
            in_channels = out_channels
            if attention:
                self.attn.append(AttnBlock(out_channels, zq_channels=zq_channels))

    def units(self) -> list[nn.Module]:
        """Its res blocks, each followed by its attention, in order. A network that runs
        them itself (`h = unit(h, zq)`) holds the level's input only until the first block
        returns, where `h = level(h, zq)` would hold it for the whole level (a full-resolution
        map: 2 GB at 1080p)."""
        units: list[nn.Module] = []
        for i, block in enumerate(self.block):
            units += [block, self.attn[i]] if self.attn else [block]
        return units

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        for unit in self.units():
            x = unit(x, zq)
        return x


class Encoder(nn.Module):
    """taming Encoder: conv_in, levels with downsampling, mid block, norm, SiLU, conv_out.

    `forward_levels` also returns every level's output so multi-granularity codecs
    (Control-GIC) can tap features at H/4, H/8 and H/16 without a second encoder.
    """

    def __init__(
        self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
        resolution: int, z_channels: int, in_channels: int = 3, dropout: float = 0.0,
        double_z: bool = False, mid: bool = True,
    ) -> None:
        super().__init__()
        self.conv_in = Conv3x3(in_channels, ch)
        self.down = nn.ModuleList()
        in_mult = [1, *ch_mult]
        res = resolution
        for i, mult in enumerate(ch_mult):
            level = Level(
                ch * in_mult[i], ch * mult, num_blocks=num_res_blocks,
                attention=res in attn_resolutions, dropout=dropout,
            )
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(ch * mult)
                res //= 2
            self.down.append(level)
        top = ch * ch_mult[-1]
        self.mid = MidBlock(top, dropout=dropout) if mid else None
        self.norm_out = group_norm(top)
        self.conv_out = Conv3x3(top, 2 * z_channels if double_z else z_channels)

    def forward_levels(self, x: Tensor, last: int = 1) -> list[Tensor]:
        """Outputs of the `last` levels before their downsampling (level i is at H / 2**i);
        the others are dropped as soon as the next level has read them (at full resolution
        one is 1 GB for a 1080p image)."""
        h = self.conv_in(x)
        outs = []
        for i, level in enumerate(self.down):
            for unit in level.units():
                h = unit(h)
            if i >= len(self.down) - last:
                outs.append(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        h = self.forward_levels(x)[-1]
        if self.mid is not None:
            h = self.mid(h)
        return norm_silu_conv(self.norm_out, self.conv_out, h)


class Decoder(nn.Module):
    """taming Decoder; with `zq_channels` every norm is MoVQ's SpatialNorm on the latent."""

    def __init__(
        self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
        resolution: int, z_channels: int, out_channels: int = 3, dropout: float = 0.0,
        zq_channels: int | None = None,
    ) -> None:
        super().__init__()
        top = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = Conv3x3(z_channels, top)
        self.mid = MidBlock(top, dropout=dropout, zq_channels=zq_channels)
        self.up = nn.ModuleList()
        in_ch = top
        for i in reversed(range(len(ch_mult))):
            out_ch = ch * ch_mult[i]
            level = Level(
                in_ch, out_ch, num_blocks=num_res_blocks + 1, attention=res in attn_resolutions,
                dropout=dropout, zq_channels=zq_channels,
            )
            in_ch = out_ch
            if i != 0:
                level.upsample = Upsample(out_ch)
                res *= 2
            self.up.insert(0, level)
        self.norm_out = Norm(in_ch, zq_channels)
        self.conv_out = Conv3x3(in_ch, out_channels)

    def forward(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        h = self.mid(self.conv_in(z), zq)
        for level in reversed(self.up):
            spares: list[Tensor] = []
            for unit in level.units():
                h = run_unit(unit, h, zq, spares)
            spares.clear()  # not held through the upsampling
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return norm_silu_conv(self.norm_out, self.conv_out, h, zq)


def init_weights_normal(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN/PatchGAN init: conv weights N(0, std), norm weights N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


