"""Building blocks of GLC (Jia et al., CVPR 2024, arXiv 2404.16340) under the official names.

Every class here keeps the attribute names of the authors' modules (jzyustc/GLC,
`src/models/{layers,vqgan_arch,loss}.py`), so the authors' state dict loads by name:

- DCVC-DC blocks (`DepthConv`, `DepthConv2`, `ConvFFN`, `DepthConvBlock`, `DepthConvBlock2`,
  `ResidualBlockUpsample`): LeakyReLU slopes 0.01 (depthwise branch) and 0.1 (gated FFN). They
  differ from ProGIC's DCVC-RT blocks in `gicl.nn.depthconv` (ReLU, chunk-add FFN, no gate),
  so they cannot be shared.
- The generative VQ-VAE (`VQAutoEncoder`: CodeFormer/Unleashing-Transformers VQGAN with a flat
  `blocks` list, 3 ResBlocks per decoder level, SiLU before the last convs and 1×1
  quant/post-quant convs). Its ResBlock/AttnBlock hold GroupNorm directly (`norm1.weight`, not
  `norm1.norm.weight` as `gicl.nn.blocks`) and its AttnBlock windows differently (below), so
  only `Downsample`, `Upsample` and `group_norm` are shared with `gicl.nn.blocks`.
- `CodePredictor` (the official `CodePredictionLoss` network): the CodeFormer-style
  transformer that predicts VQ indices from a latent (paper Sec. 3.3, Fig. 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gicl.nn.banded import Conv3x3, add_conv1x1, empty_map
from gicl.nn.blocks import (
    Downsample,
    Upsample,
    attend,
    fused_activations,
    group_norm,
    inference,
    norm_silu_conv,
)
from gicl.nn.vq import VectorQuantizer

# -------------------------------------------------------------------------------- DCVC-DC


def depthwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A depthwise 3×3 conv; in float64 as 9 shifted multiply-adds into one buffer.

    GLC's entropy-parameter path runs in float64 when coding (see `gicl.codecs.glc`), and
    PyTorch's CPU grouped convolution has no fast float64 kernel (≈ 100× slower than the
    dense convolutions around it); 9 in-place `addcmul_` are as exact and fast (3.1 ms for
    a 512-channel 48×32 map on 2 threads, against 10.2 ms for 9 products and sums each
    allocating its result).
    """
    if x.dtype != torch.float64:
        return conv(x)
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    k = conv.weight[:, 0]
    out = conv.bias[:, None, None].expand_as(x).clone()
    for i in range(3):
        for j in range(3):
            out.addcmul_(xp[..., i:i + h, j:j + w], k[:, i, j, None, None])
    return out


class DepthConv(nn.Module):
    """1×1 → LeakyReLU(0.01) → depthwise 3×3 → 1×1, plus the (adapted) input."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, in_ch, 1), nn.LeakyReLU(0.01))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(depthwise(self.depth_conv, self.conv1(x))) + identity


class DepthConv2(nn.Module):
    """Gated variant (GLC's transform coder): out_conv(dw(act(1×1 x)) · 1×1 x) + x."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1), nn.LeakyReLU(0.01),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch),
        )
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        self.out_conv = nn.Conv2d(out_ch, out_ch, 1)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return identity + self.out_conv(self.conv1(x) * self.conv2(x))


class ConvFFN(nn.Module):
    """Gated FFN, expansion 2: x + conv_out(a · LeakyReLU₀.₁(b)), (a, b) = chunk(conv(x))."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, in_ch * 4, 1)
        self.conv_out = nn.Conv2d(in_ch * 2, in_ch, 1)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, 1)
        return x + self.conv_out(a * self.relu(b))


class DepthConvBlock(nn.Module):
    """DepthConv then ConvFFN, held as `block.0`, `block.1` (official names)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DepthConvBlock2(nn.Module):
    """DepthConv2 then ConvFFN (the blocks of GLC's `enc`/`dec`)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(DepthConv2(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


def subpel_conv1x1(in_ch: int, out_ch: int, r: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch * r * r, 1), nn.PixelShuffle(r))


class ResidualBlockUpsample(nn.Module):
    """CompressAI-style ×r residual upsampler with 1×1 sub-pixel convolutions (DCVC-DC)."""

    def __init__(self, in_ch: int, out_ch: int, upsample: int = 2) -> None:
        super().__init__()
        self.subpel_conv = subpel_conv1x1(in_ch, out_ch, upsample)
        self.conv = Conv3x3(out_ch, out_ch)
        self.upsample = subpel_conv1x1(in_ch, out_ch, upsample)

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.conv(F.leaky_relu(self.subpel_conv(x), 0.01)), 0.1)
        return out + self.upsample(x)


# -------------------------------------------------------------------------------- VQGAN


class ResBlock(nn.Module):
    """GN → SiLU → 3×3 → GN → SiLU → 3×3, plus the input (1×1 `conv_out` when widening)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = Conv3x3(in_ch, out_ch)
        self.norm2 = group_norm(out_ch)
        self.conv2 = Conv3x3(out_ch, out_ch)
        self.conv_out = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor, spare: Tensor | None = None, consume: bool = False) -> Tensor:
        """spare (inference, `_run`): a dead map of conv1's output shape; conv1 writes into
        it when it runs in bands, instead of into a new map. consume (with a spare, where
        `adds_into(x)`): x is the caller's to give up; conv2's output is added into x, which
        is returned, and the spare (conv1's output) is dead again afterwards."""
        into = spare if spare is not None and fused_activations(self.conv1, x) else None
        del spare  # unused: freed now, not held through the block
        if consume and into is not None and self.adds_into(x):
            h = norm_silu_conv(self.norm1, self.conv1, x, into=into)
            return norm_silu_conv(self.norm2, self.conv2, h, into=x, accumulate=True)
        # conv1's output is passed on directly (no name holds it): conv2 writes over it
        h = norm_silu_conv(self.norm2, self.conv2, norm_silu_conv(self.norm1, self.conv1, x, into=into),
                           over_input=True)
        if inference():  # h is fresh: the shortcut is added into it (by rows on large maps)
            return add_conv1x1(h, self.conv_out or nn.Identity(), x)
        return h + (x if self.conv_out is None else self.conv_out(x))

    def adds_into(self, x: Tensor) -> bool:
        """Whether `forward(x, spare, consume=True)` adds the block's result into x: an
        identity shortcut and convolutions by bands (inference on a large map)."""
        return self.conv_out is None and fused_activations(self.conv1, x)


class AttnBlock(nn.Module):
    """Single-head self-attention; in eval mode within `patch`×`patch` windows.

    The windows are the official `forward_patch` tiling: starts 0, p, 2p, … on each side, the
    last window truncated at the border (unlike `gicl.nn.blocks.AttnBlock`, whose last window
    is shifted back). Kept exactly so that the authors' weights see the context they were
    evaluated with; training (small crops) attends globally, as the official `forward`.
    """

    def __init__(self, channels: int, patch: int = 32) -> None:
        super().__init__()
        self.patch = patch
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        _, _, hh, ww = q.shape
        p = self.patch
        if self.training or p <= 0 or (hh <= p and ww <= p):
            return x + self.proj_out(attend(q, k, v))
        out = torch.empty_like(q)
        for i in range(0, hh, p):
            for j in range(0, ww, p):
                win = (..., slice(i, i + p), slice(j, j + p))
                out[win] = attend(q[win], k[win], v[win])
        return x + self.proj_out(out)


def _run(blocks: nn.ModuleList, x: Tensor) -> Tensor:
    """The official flat block list; its tail (GroupNorm, SiLU, 3×3 conv) as one unit, so a
    full-resolution tail runs band by band (`norm_silu_conv`).

    At inference a res block's first conv writes into a dead map of its output's shape
    when there is one: the map the block before read, or the previous block's conv1 output
    where that block added its result into its own input (`ResBlock.forward`, consume):
    the pages are mapped already, where a new map costs page faults. Only maps made inside
    this loop are reused or added into, never x itself (the caller's).

    On a CPU the maps are channels-last (N, H, W, C) at inference: oneDNN's convolutions
    read and write that layout without reordering (a 128-channel 3×3 convolution on a band
    of 768-pixel rows: 6.9 against 7.6 ms in NCHW here) and a band of rows is then one
    contiguous block, so a conv2 adds into the block's input in the convolution itself
    (`gicl.nn.banded.add_conv_rows`). GLC at 768×512: 13.8 → 11.7–12.2 s encode + decode
    (docs/benchmarks.md)."""
    if inference() and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    body = blocks[:-3]
    spare: Tensor | None = None  # a dead map, held by nothing else
    for i, block in enumerate(body):
        consume = False
        if isinstance(block, ResBlock):
            n, _, h, w = x.shape
            if spare is not None and (spare.dtype != x.dtype
                                      or spare.shape != (n, block.conv1.out_channels, h, w)):
                spare = None
            consume = i > 0 and block.adds_into(x)
            if consume and spare is None:
                spare = empty_map(x, n, block.conv1.out_channels, h, w)
            y = block(x, spare, consume)
            if not consume:  # else spare holds conv1's output: dead once conv2 is added into x
                spare = None
        else:
            y = block(x)
        after = body[i + 1] if i + 1 < len(body) else None
        if (spare is None and i > 0 and inference() and isinstance(after, ResBlock)
                and x.dtype == y.dtype
                and x.shape == (y.shape[0], after.conv1.out_channels, *y.shape[-2:])
                and x.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()):
            spare = x
        x = y
    norm, _, conv = blocks[-3:]
    return norm_silu_conv(norm, conv, x).contiguous()


def _levels(nf: int, ch_mult: list[int]) -> list[tuple[int, int]]:
    return [(nf * m_in, nf * m) for m_in, m in zip([1, *ch_mult[:-1]], ch_mult, strict=True)]


class VQGANEncoder(nn.Module):
    """x ∈ [−1, 1] → latent l at H/2^(levels−1), `blocks` in the official order."""

    def __init__(
        self, *, nf: int, emb_dim: int, ch_mult: list[int], res_blocks: int, resolution: int,
        attn_resolutions: list[int], patch: int,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [Conv3x3(3, nf)]
        res = resolution
        for i, (c_in, c_out) in enumerate(_levels(nf, ch_mult)):
            for _ in range(res_blocks):
                blocks.append(ResBlock(c_in, c_out))
                c_in = c_out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(c_out, patch))
            if i != len(ch_mult) - 1:
                blocks.append(Downsample(c_out))
                res //= 2
        top = nf * ch_mult[-1]
        blocks += [ResBlock(top, top), AttnBlock(top, patch), ResBlock(top, top),
                   group_norm(top), nn.SiLU(), Conv3x3(top, emb_dim)]
        self.blocks = nn.ModuleList(blocks)
        self.quant_conv = nn.Conv2d(emb_dim, emb_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant_conv(_run(self.blocks, x))


class VQGANGenerator(nn.Module):
    """latent → x̂ ∈ ≈[−1, 1]; `res_blocks` ResBlocks per level (GLC: 3)."""

    def __init__(
        self, *, nf: int, emb_dim: int, ch_mult: list[int], res_blocks: int, resolution: int,
        attn_resolutions: list[int], patch: int,
    ) -> None:
        super().__init__()
        self.post_quant_conv = nn.Conv2d(emb_dim, emb_dim, 1)
        c = nf * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [Conv3x3(emb_dim, c),
                                   ResBlock(c, c), AttnBlock(c, patch), ResBlock(c, c)]
        for i in reversed(range(len(ch_mult))):
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, nf * ch_mult[i]))
                c = nf * ch_mult[i]
                if res in attn_resolutions:
                    blocks.append(AttnBlock(c, patch))
            if i != 0:
                blocks.append(Upsample(c))
                res *= 2
        blocks += [group_norm(c), nn.SiLU(), Conv3x3(c, 3)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        return _run(self.blocks, self.post_quant_conv(x))

    def last_layer(self) -> Tensor:
        return self.blocks[-1].weight


class VQAutoEncoder(nn.Module):
    """GLC's generative VQ-VAE: `encoder`, `quantize` (training only in GLC) and `generator`.

    `codebook=False` leaves `quantize` out: GLC's inference path never uses it (the latent
    is transform-coded, not vector-quantized), so an exported codec does not carry it.
    """

    def __init__(
        self, *, nf: int = 128, emb_dim: int = 256, ch_mult: list[int] = (1, 1, 2, 2, 4),
        res_blocks: int = 2, resolution: int = 256, attn_resolutions: list[int] = (16,),
        codebook_size: int = 16384, patch: int = 32, beta: float = 0.25, legacy_vq: bool = True,
        codebook: bool = True,
    ) -> None:
        super().__init__()
        common = dict(nf=nf, emb_dim=emb_dim, ch_mult=list(ch_mult), resolution=resolution,
                      attn_resolutions=list(attn_resolutions), patch=patch)
        self.encoder = VQGANEncoder(**common, res_blocks=res_blocks)
        self.quantize = (
            VectorQuantizer(codebook_size, emb_dim, beta=beta, legacy=legacy_vq) if codebook else None
        )
        self.generator = VQGANGenerator(**common, res_blocks=res_blocks + 1)


# -------------------------------------------------------------------------------- code prediction


class TransformerSALayer(nn.Module):
    """Pre-LN transformer layer (CodeFormer): position added to queries and keys only."""

    def __init__(self, dim: int, heads: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        h = self.norm1(x)
        qk = h + pos
        x = x + self.self_attn(qk, qk, value=h, need_weights=False)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class CodePredictor(nn.Module):
    """Predicts the VQ index of every latent position (logits over the codebook).

    A learned position embedding of exactly `tokens` entries (256 = a 16×16 latent, i.e.
    256×256 crops): the official design; other sizes are refused rather than interpolated.
    """

    def __init__(
        self, *, latent_dim: int = 256, dim: int = 512, heads: int = 8, layers: int = 9,
        codebook_size: int = 16384, tokens: int = 256,
    ) -> None:
        super().__init__()
        self.position_emb = nn.Parameter(torch.zeros(tokens, dim))
        self.feat_emb = nn.Linear(latent_dim, dim)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim, heads, dim * 2) for _ in range(layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codebook_size, bias=False))

    def forward(self, latent: Tensor) -> Tensor:
        """(B, C, h, w) latent with h·w = tokens → logits (B, h·w, K), raster order."""
        n = latent.shape[-2] * latent.shape[-1]
        if n != self.position_emb.shape[0]:
            raise ValueError(
                f"the code predictor holds {self.position_emb.shape[0]} positions, the latent has "
                f"{n}: train it on crops whose latent has exactly that many tokens (256² for GLC)"
            )
        x = self.feat_emb(latent.flatten(2).permute(2, 0, 1))  # (hw, B, dim)
        pos = self.position_emb[:, None].to(x.dtype)
        for layer in self.ft_layers:
            x = layer(x, pos)
        return self.idx_pred_layer(x).permute(1, 0, 2)
