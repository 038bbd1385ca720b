"""Control-GIC (Li et al., ICLR 2025): one VQGAN with three token granularities routed by
patch information density, and a static entropy code for the indices.

Architecture (paper §3; shapes follow the official state dict, 130.36 M parameters):
- `GranularEncoder`: the taming encoder (ch 128, ch_mult [1,2,2,4,4], 2 res blocks,
  attention at H/8). Its level outputs at H/4, H/8 and H/16 each go through their own head
  (Res–Attn–Res mid block, GroupNorm, SiLU, 3×3 conv to z = 4 channels); the encoder's own
  mid/norm_out/conv_out is the coarse head. 1×1 `quant_conv`, one shared codebook K = 1024,
  d = 4.
- Router (`routing.py`): masks m₃ (coarse, H/16), m₂ (medium, H/8), m₁ (fine, H/4) from
  ratios (r₁ fine, r₂ medium, r₃ coarse), per image with exact counts (or the official
  k − 1 rule, `router="official"`).
- Hybrid latent (eq. 2): ẑ = ẑ₁⊙m₁ + up2(ẑ₂⊙m₂) + up4(ẑ₃⊙m₃), nearest upsampling.
- `ConditionalDecoder` (eq. 3–4), MoVQ SpatialNorm conditioned on ẑ everywhere, 3 res
  blocks per level, attention at H/8. Three conv_in + mid branches, each at its own
  resolution: the coarse branch runs on avgpool4(ẑ) at H/16 and starts the decoder; before
  the H/8 level the medium positions are replaced by the medium branch on avgpool2(ẑ); before
  the H/4 level the fine positions by the fine branch on ẑ. Other positions keep the
  decoder's own features (eq. 4's D(y)⊙(1−m) term). The official code instead runs all
  three branches at H/4 and average-pools afterwards, and zeroes the non-medium, non-coarse
  positions at H/8 (`decoder_branches="official"`); by default we follow the paper's
  equations, which also keeps the coarse and medium branches 16× and 4× cheaper. Parameter
  shapes are the same either way.
- Naming: the authors' encoder `mid`/`norm_out`/`conv_out` and decoder `conv_in`/`mid` are
  their *medium* branch; here the un-suffixed names are the *coarse* branch (the taming
  encoder's own head reads the last level). `gicl/importers/controlgic.py` holds the one
  table between the two.
- VQ loss: the masked loss of each granularity weighted by the area its tokens cover, which
  equals the official loss on the hybrid latent at H/4 (where a coarse token appears 16×).
  β = 0.25 on the commitment term by default; the official code (taming "legacy") puts it on
  the codebook term: `legacy_vq=True`.

Official behaviour: `OFFICIAL_BEHAVIOUR` lists the options under which this codec computes
what the authors' released inference computes (input in [0, 1], k − 1 routing, H/4 decoder
branches, global attention, their VQ distance formula and Huffman tree); imported models
carry them in their config, and each can be switched back to gicl's choice (docs/controlgic.md).

Attention memory: every AttnBlock uses `scaled_dot_product_attention` (flash kernel on
CPU and GPU: memory linear in tokens), and at inference attends within 64×64-token windows
(`attention_window`, 0 = global). At 256² training crops every attention block is global
(H/4 is 64 tokens), so a window never shows a block less context than it was trained with;
at 1080p the H/4 blocks see 40 windows instead of one 129 600-token attention.

Bitstream: sections [masks, coarse, medium, fine]. Masks are raw bits: m₃ (one bit per 16×16
patch), then m₂ only for the 8×8 cells that no coarse patch covers (a coarse patch implies
its four cells are not medium), so N₁₆ + N₈ − 4·n₃ bits; m₁ is implied. Index sections hold
only the tokens that exist at their granularity, in raster order, coded with a canonical
static Huffman code built from the persistent `index_frequencies` table (paper) or, with
`entropy_coder="range"`, a 24-bit static range coder on the same table. Each section's
checksum covers its decoded symbols. The table starts all ones (uniform) and is filled by a
training callback through `accumulate_frequencies`; because it starts at one, every index
keeps a nonzero count.

Rate control (appendix A.3): `theoretical_bpp` is eq. 12–13. L there is "the average code
length of all indices", 10.3875 for K = 1024 — larger than log₂ 1024 = 10, which only the
unweighted mean over the K indices of a Huffman code can be; `mean_code_length` computes
that from the model's table (and returns 10.3875 before any table is accumulated). Its mask
term (4r₁ + r₂)/256 is not what this stream writes ((5 − 4r₃)/256, above), and L weighs
every index alike, so `stream_estimate` gives the rate control its numbers instead: for an
image size and ratios, the mask bits exactly (the router's per-image counts are exact) and
the index bits as the coded tokens times the code's expected length under the model's table
(Σ f_k ℓ_k / Σ f_k). `point_for_bpp` searches a one-parameter curve of ratio triples
through the paper's Table 2 rows (from all-coarse to all-fine), so every bpp maps to one
documented triple, by the stream estimate; with `exact=True` it searches the same curve by
real encoding of the given image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from gicl.codecs.base import (
    Codec,
    CodecOutput,
    EncodedImage,
    pad_to_multiple,
    register_codec,
    symbols_checksum,
    verify_symbols,
)
from gicl.codecs.routing import ROUTER_RULES, Masks, patch_entropies, route, token_counts
from gicl.entropy import fixed
from gicl.entropy.huffman import HuffmanCode
from gicl.entropy.static_range import StaticRangeCoder
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.banded import Conv3x3
from gicl.nn.blocks import (
    INFERENCE_DTYPES,
    AttnBlock,
    Decoder,
    Encoder,
    MidBlock,
    group_norm,
    network_precision,
    norm_silu_conv,
    run_unit,
    set_attention_window,
)
from gicl.nn.heap import release_free_heap
from gicl.nn.vq import VectorQuantizer

PAPER_L = 10.3875
GRANULARITIES = ("fine", "medium", "coarse")
AREA = {"fine": 1, "medium": 4, "coarse": 16}  # H/4 tokens covered by one token
TRAIN_RATIOS = (0.5, 0.4, 0.1)
# Table 2 of the paper, between all-coarse and all-fine: the rate-control curve
CURVE = (
    (0.0, 0.0, 1.0), (0.0, 0.23, 0.77), (0.10, 0.67, 0.23), (0.37, 0.46, 0.17),
    (0.61, 0.30, 0.09), (0.90, 0.10, 0.0), (1.0, 0.0, 0.0),
)
CURVE_STEPS = 100  # grid points per curve segment
# default sweep, ≈ 0.05 – 0.62 bpp at L = 10.3875: Table 2 plus the training ratios and two
# points that fill the gaps at the low end and between 0.19 and 0.33
OPERATING_RATIOS = (
    (0.0, 0.10, 0.90), (0.0, 0.23, 0.77), (0.10, 0.67, 0.23), (0.25, 0.55, 0.20),
    (0.37, 0.46, 0.17), (0.50, 0.40, 0.10), (0.61, 0.30, 0.09), (0.90, 0.10, 0.0),
)


ENTROPY_CODERS = ("huffman", "huffman-official", "range")
INPUT_RANGES = ((-1.0, 1.0), (0.0, 1.0))
DECODER_BRANCHES = ("own", "official")
VQ_DISTANCES = ("reduced", "official")
# How the authors' released inference computes (commit e1c3afe); `gicl import controlgic`
# writes these into the model file. The constructor defaults are gicl's own choices.
OFFICIAL_BEHAVIOUR: dict[str, Any] = {
    "input_range": [0.0, 1.0], "router": "official", "decoder_branches": "official",
    "attention_window": 0, "vq_distance": "official", "entropy_coder": "huffman-official",
    "inference_dtype": "float32",
}


def theoretical_bpp(ratios: Sequence[float], L: float = PAPER_L) -> float:
    """Eq. 12–13: bpp of indices L/256·(16r₁ + 4r₂ + r₃) plus masks (4r₁ + r₂)/256."""
    r1, r2, r3 = ratios
    return L / 256 * (16 * r1 + 4 * r2 + r3) + (4 * r1 + r2) / 256


def mask_section_bits(n16: int | Tensor, coarse: int | Tensor) -> int | Tensor:
    """Raw mask bits of one image with N₁₆ patches, n₃ of them coarse: m₃ (N₁₆ bits), then m₂
    for the N₈ − 4·n₃ = 4·N₁₆ − 4·n₃ cells that no coarse patch covers."""
    return 5 * n16 - 4 * coarse


@dataclass(frozen=True)
class StreamEstimate:
    """What gicl's stream spends on one image at given ratios, known before encoding it.

    mask_bits: the mask section's bits (exact). tokens: coded tokens per granularity (exact
    with the default router). code_length: expected bits per index under the model's table,
    Σ f_k ℓ_k / Σ f_k. pixels: h·w of the image (unpadded), what bpp divides by. The real
    payload differs by how far the image's own index statistics are from the table's
    average, and by each section's padding to a whole byte (docs/controlgic.md).
    """

    mask_bits: int
    tokens: dict[str, int]
    code_length: float
    pixels: int

    @property
    def index_bits(self) -> float:
        return sum(self.tokens.values()) * self.code_length

    @property
    def bpp(self) -> float:
        return (self.mask_bits + self.index_bits) / self.pixels


def curve_ratios() -> list[tuple[float, float, float]]:
    """The rate-control grid: CURVE sampled CURVE_STEPS times per segment, rounded to 1e-4."""
    out = []
    for a, b in zip(CURVE[:-1], CURVE[1:], strict=True):
        for s in range(CURVE_STEPS):
            t = s / CURVE_STEPS
            r1, r2 = (round(a[i] + t * (b[i] - a[i]), 4) for i in range(2))
            out.append((r1, r2, max(0.0, round(1.0 - r1 - r2, 4))))
    out.append(CURVE[-1])
    return out


def _head(x: Tensor, mid: MidBlock, norm: nn.GroupNorm, conv: nn.Conv2d) -> Tensor:
    return conv(F.silu(norm(mid(x))))


class GranularQuantizer(VectorQuantizer):
    """The shared codebook, with the distance formula as an option.

    "official": `|z|² + |e|² − 2 z·e` in the authors' order of operations; "reduced": gicl's
    `|e|² − 2 z·e` (the argmin is the same in exact arithmetic; in float32 the two can pick
    different codewords where the two nearest are within rounding, e.g. 5.4e-7 apart).
    """

    def __init__(self, n_embed: int, embed_dim: int, *, distance: str, **kwargs: Any) -> None:
        super().__init__(n_embed, embed_dim, **kwargs)
        self.distance = distance

    def indices(self, z: Tensor) -> Tensor:
        if self.distance == "reduced":
            return super().indices(z)
        b, d, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
        e = self.embedding.weight.float()
        e2, et = (e**2).sum(1), e.t()
        out = [  # chunked like nearest_codeword: a 1080p H/4 map would need 0.5 GB at once
            ((part**2).sum(1, keepdim=True) + e2 - 2 * torch.einsum("bd,dn->bn", part, et)).argmin(1)
            for part in flat.split(8192)
        ]
        return torch.cat(out).view(b, h, w)


class GranularEncoder(Encoder):
    """Taming encoder with latent heads at H/4 (fine), H/8 (medium) and H/16 (coarse).

    The inherited mid/norm_out/conv_out head reads the last level (H/16) and is the coarse
    head; the fine and medium heads read the level outputs at H/4 and H/8.
    """

    def __init__(
        self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
        resolution: int, z_channels: int, dropout: float = 0.0,
    ) -> None:
        super().__init__(
            ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions, resolution=resolution, z_channels=z_channels,
            dropout=dropout,
        )
        c_fine, c_medium = ch * ch_mult[-3], ch * ch_mult[-2]
        self.mid_fine = MidBlock(c_fine, dropout=dropout)
        self.norm_out_fine = group_norm(c_fine)
        self.conv_out_fine = Conv3x3(c_fine, z_channels)
        self.mid_medium = MidBlock(c_medium, dropout=dropout)
        self.norm_out_medium = group_norm(c_medium)
        self.conv_out_medium = Conv3x3(c_medium, z_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """(z_fine at H/4, z_medium at H/8, z_coarse at H/16)."""
        f_fine, f_medium, f_coarse = self.forward_levels(x, last=3)
        return (
            _head(f_fine, self.mid_fine, self.norm_out_fine, self.conv_out_fine),
            _head(f_medium, self.mid_medium, self.norm_out_medium, self.conv_out_medium),
            _head(f_coarse, self.mid, self.norm_out, self.conv_out),
        )


class ConditionalDecoder(Decoder):
    """MoVQ decoder with Control-GIC's probabilistic conditioning (eq. 3–4).

    The inherited conv_in + mid form the coarse branch (H/16); `conv_in_medium`/`mid_medium`
    and `conv_in_fine`/`mid_fine` are the branches whose outputs replace the medium positions
    before the H/8 level and the fine positions before the H/4 level.
    """

    def __init__(
        self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
        resolution: int, z_channels: int, zq_channels: int, dropout: float = 0.0,
    ) -> None:
        super().__init__(
            ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions, resolution=resolution, z_channels=z_channels,
            dropout=dropout, zq_channels=zq_channels,
        )
        c_medium, c_fine = ch * ch_mult[-1], ch * ch_mult[-2]  # channels entering H/8, H/4
        self.conv_in_medium = Conv3x3(z_channels, c_medium)
        self.mid_medium = MidBlock(c_medium, dropout=dropout, zq_channels=zq_channels)
        self.conv_in_fine = Conv3x3(z_channels, c_fine)
        self.mid_fine = MidBlock(c_fine, dropout=dropout, zq_channels=zq_channels)

    def forward(  # type: ignore[override]
        self, z: Tensor, zq: Tensor, masks: Masks, branches: str = "own"
    ) -> Tensor:
        """z: post-quant hybrid latent at H/4; zq: the hybrid codewords (SpatialNorm input);
        masks: bool (B, 1, ·, ·) at H/16, H/8, H/4. branches: "own" (each branch at its own
        resolution) or "official" (all three at H/4, pooled after, as the authors' code)."""
        top = len(self.up) - 1
        official = branches == "official"
        early: dict[str, Tensor] = {}  # official: the medium and fine branches, made first
        if official:
            h = F.avg_pool2d(self.mid(self.conv_in(z), zq), 4)
            early["medium"] = F.avg_pool2d(self.mid_medium(self.conv_in_medium(z), zq), 2)
            early["fine"] = self.mid_fine(self.conv_in_fine(z), zq)
        else:
            h = self.mid(self.conv_in(F.avg_pool2d(z, 4)), zq)
        # a branch is merged and dropped at once (no name holds it on: the fine one has 512
        # channels at H/4, 265 MB at 1080p)
        for i in reversed(range(len(self.up))):
            if i == top - 1:
                if official:  # positions neither coarse nor medium are zeroed
                    kept = masks.coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
                    h = torch.where(masks.medium, early.pop("medium"), torch.where(kept, h, 0.0))
                else:
                    h = torch.where(masks.medium, self.mid_medium(
                        self.conv_in_medium(F.avg_pool2d(z, 2)), zq), h)
            elif i == top - 2:
                h = torch.where(masks.fine, early.pop("fine") if official
                                else self.mid_fine(self.conv_in_fine(z), zq), h)
            level = self.up[i]
            spares: list[Tensor] = []
            for unit in level.units():  # (not level(h): that would hold h for the whole level)
                h = run_unit(unit, h, zq, spares)
            spares.clear()  # not held through the upsampling
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return norm_silu_conv(self.norm_out, self.conv_out, h, zq)


@register_codec
class ControlGIC(Codec):
    codec_id = "controlgic"
    multiple = 16

    def __init__(
        self, *, ch: int = 128, ch_mult: list[int] = (1, 2, 2, 4, 4), num_res_blocks: int = 2,
        attn_resolutions: list[int] = (32,), resolution: int = 256, z_channels: int = 4,
        embed_dim: int = 4, n_embed: int = 1024, beta: float = 0.25, legacy_vq: bool = False,
        dropout: float = 0.0, attention_window: int = 64,
        default_ratios: list[float] = TRAIN_RATIOS, entropy_coder: str = "huffman",
        input_range: list[float] = (-1.0, 1.0), router: str = "exact",
        decoder_branches: str = "own", vq_distance: str = "reduced", inference_dtype: str = "float32",
    ) -> None:
        """default_ratios: (r₁ fine, r₂ medium, r₃ coarse) when forward gets no point.

        Behaviour options (docs/controlgic.md; `OFFICIAL_BEHAVIOUR` holds the authors' values,
        which `gicl import controlgic` writes; the defaults here are gicl's own choices):
        - input_range: [-1, 1] (gicl, the authors' training loader) or [0, 1] (the authors'
          inference script): the range the network sees; the decoder output is mapped back
          from it. A model works well only in the range it was trained for.
        - router: "exact" (exactly round(N·r) patches per image) or "official" (strict `<`
          against the k-th smallest entropy: k − 1 patches); see `routing.py`.
        - decoder_branches: "own" (coarse/medium branches at H/16 and H/8 on the pooled
          latent, paper eq. 3–4) or "official" (all three at H/4, average-pooled after, and
          fine positions zeroed before the H/8 level): same weights, different outputs; "own"
          runs the coarse and medium branches on 16× and 4× fewer positions.
        - attention_window: latent tokens per side of an inference attention window, 0 =
          global (official: exact global attention at any size, quadratic memory).
        - vq_distance: "reduced" or "official" (see `GranularQuantizer`).
        - entropy_coder: "huffman" (canonical, gicl's tie-breaking), "huffman-official" (the
          released coder's tree, byte-exact payloads) or "range" (24-bit static range coder).
        - inference_dtype: "float32" or "bfloat16" (opt-in): the encoder and decoder networks
          at inference under bf16 autocast (≈ 2–3× faster on CPUs with AMX, and on GPUs; the
          reconstruction moves by a fraction of a dB, docs/benchmarks.md). The codeword search
          stays float32 and decoding reads only the indices, so a file decodes to the same
          symbols on any machine; training keeps the trainer's precision.
        """
        super().__init__()
        if len(ch_mult) != 5:
            raise RecipeError(
                f"codec.ch_mult needs 5 levels (tokens at H/4, H/8, H/16), got {list(ch_mult)}"
            )
        _choice("entropy_coder", entropy_coder, ENTROPY_CODERS)
        _choice("router", router, ROUTER_RULES)
        _choice("decoder_branches", decoder_branches, DECODER_BRANCHES)
        _choice("vq_distance", vq_distance, VQ_DISTANCES)
        _choice("inference_dtype", inference_dtype, INFERENCE_DTYPES)
        self.inference_dtype = inference_dtype
        try:
            self.input_range = tuple(float(v) for v in input_range)
        except (TypeError, ValueError):
            self.input_range = ()
        if self.input_range not in INPUT_RANGES:
            raise RecipeError(f"codec.input_range must be [-1, 1] or [0, 1], got {input_range!r}")
        self.router, self.decoder_branches = router, decoder_branches
        common = dict(
            ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
            attn_resolutions=list(attn_resolutions), resolution=resolution,
            z_channels=z_channels, dropout=dropout,
        )
        self.encoder = GranularEncoder(**common)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.quantizer = GranularQuantizer(
            n_embed, embed_dim, beta=beta, legacy=legacy_vq, distance=vq_distance
        )
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.decoder = ConditionalDecoder(**common, zq_channels=embed_dim)
        self.register_buffer("index_frequencies", torch.ones(n_embed, dtype=torch.int64))
        try:
            self.default_ratios = self._check_ratios(default_ratios, "codec.default_ratios")
        except UserError as e:
            raise RecipeError(str(e)) from e
        self.entropy_coder = entropy_coder
        self._coders: dict[str, tuple[Tensor, int, Tensor, HuffmanCode | StaticRangeCoder]] = {}
        set_attention_window(self, attention_window)

    def behaviour(self) -> dict[str, Any]:
        """The options that decide how this model computes (what `gicl info` lists)."""
        return {
            "input_range": list(self.input_range), "router": self.router,
            "decoder_branches": self.decoder_branches,
            # read from the blocks: tools (the memory benchmark) may switch it after building
            "attention_window": next(m.window for m in self.modules() if isinstance(m, AttnBlock)),
            "vq_distance": self.quantizer.distance, "entropy_coder": self.entropy_coder,
            "inference_dtype": self.inference_dtype,
        }

    # ---------------------------------------------------------------- frequency table
    @torch.no_grad()
    def accumulate_frequencies(self, counts: Tensor) -> None:
        """Add per-index counts of coded tokens (K,) to the table (e.g. summed over steps and
        all-reduced by a training callback; `CodecOutput.index_counts` holds a batch's)."""
        self.index_frequencies += counts.to(self.index_frequencies)

    def _table_coder(self, kind: str) -> HuffmanCode | StaticRangeCoder:
        """The code for the current table, rebuilt only when the buffer changes (in-place
        updates bump the tensor's version counter; loading or moving replaces or bumps it)."""
        t = self.index_frequencies
        cached = self._coders.get(kind)
        if cached is None or cached[0] is not t or cached[1] != t._version:
            # DDP's buffer broadcast rewrites the same values every step: compare first
            table = t.detach().to("cpu", copy=True)  # a copy even on CPU: t changes in place
            if cached is not None and torch.equal(cached[2], table):
                coder = cached[3]
            elif kind == "huffman":
                coder = HuffmanCode.from_counts(table.numpy())
            elif kind == "huffman-official":
                coder = HuffmanCode.from_counts_official(table.numpy())
            else:
                coder = StaticRangeCoder(table.numpy())
            # holding the tensor keeps its id from being reused by another table
            self._coders[kind] = cached = (t, t._version, table, coder)
        return cached[3]

    def coder(self) -> HuffmanCode | StaticRangeCoder:
        return self._table_coder(self.entropy_coder)

    def _symbol_costs(self) -> NDArray[np.float64]:
        """(K,) bits each index costs: Huffman code lengths, or −log₂ p for the range coder."""
        c = self.coder()
        return np.asarray(c.lengths if isinstance(c, HuffmanCode) else c.information, np.float64)

    def symbol_bits(self, device: torch.device) -> Tensor:
        """`_symbol_costs` as a float32 tensor on `device` (the training rate)."""
        return torch.as_tensor(self._symbol_costs(), dtype=torch.float32).to(device, non_blocking=True)

    def expected_code_length(self) -> float:
        """Bits per coded index expected under the table: Σ f_k ℓ_k / Σ f_k (ℓ_k: the code's
        cost of index k). Unlike eq. 12's L this weighs each index by how often it is coded,
        so it is what a stream of table-distributed indices costs (an all-zero table, never
        counted, weighs the indices alike)."""
        table = self.index_frequencies.detach().cpu().numpy().astype(np.float64)
        weights = table if table.sum() > 0 else np.ones_like(table)
        return float((weights * self._symbol_costs()).sum() / weights.sum())

    def mean_code_length(self) -> float:
        """Eq. 12's L: the mean Huffman code length over all K indices (unweighted, as the
        paper's 10.3875 > log₂K shows); 10.3875 until a table has been accumulated."""
        if self.quantizer.n_embed == 1024 and bool((self.index_frequencies == 1).all()):
            return PAPER_L
        kind = "huffman-official" if self.entropy_coder == "huffman-official" else "huffman"
        return float(self._table_coder(kind).lengths.mean())

    # ---------------------------------------------------------------- model
    @staticmethod
    def _check_ratios(ratios: Any, where: str) -> tuple[float, float, float]:
        try:
            r = tuple(float(v) for v in ratios)
        except (TypeError, ValueError):
            r = ()
        if len(r) != 3 or not all(map(math.isfinite, r)) or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6:
            raise UserError(
                f"{where} must be three non-negative ratios (fine, medium, coarse) summing to 1, "
                f"got {ratios!r}"
            )
        return r  # type: ignore[return-value]

    def _ratios(self, point: dict[str, Any] | None) -> tuple[float, float, float]:
        if point is None:
            return self.default_ratios
        unknown = sorted(set(point) - {"ratios"})
        if unknown:
            raise UserError(f"unknown key '{unknown[0]}' in a Control-GIC point (known: ratios)")
        return self._check_ratios(point.get("ratios"), "point.ratios")

    def check_point(self, point: dict[str, Any]) -> None:
        self._ratios(point)

    def model_input(self, x: Tensor) -> Tensor:
        """Image in [0, 1] → the network's input range, padded to a multiple of 16."""
        xp = pad_to_multiple(x, self.multiple)
        return xp * 2 - 1 if self.input_range == (-1.0, 1.0) else xp

    def _analyse(self, x: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Latents (fine, medium, coarse) and patch entropies (e8, e16) of x padded to 16."""
        xp = self.model_input(x)
        with network_precision(x, self.inference_dtype, self.training):
            latents = tuple(self.quant_conv(z) for z in self.encoder(xp))
        return latents, patch_entropies(xp)  # type: ignore[return-value]

    def _route(self, e8: Tensor, e16: Tensor, ratios: Sequence[float]) -> Masks:
        return route(e8, e16, ratios, rule=self.router)

    @staticmethod
    def _hybrid(zq: dict[str, Tensor], masks: Masks) -> Tensor:
        """Eq. 2 (nearest upsampling)."""
        m = masks.as_dict()
        out = zq["fine"] * m["fine"]
        out = out + F.interpolate(zq["medium"] * m["medium"], scale_factor=2.0, mode="nearest")
        return out + F.interpolate(zq["coarse"] * m["coarse"], scale_factor=4.0, mode="nearest")

    def decode_latent(self, zq: Tensor, masks: Masks) -> Tensor:
        """Decoder output in the network's range (the authors' `CGIC.decode`), float32."""
        with network_precision(zq, self.inference_dtype, self.training):
            x = self.decoder(self.post_quant_conv(zq), zq, masks, self.decoder_branches)
        return x.float()

    def _decode(self, zq: Tensor, masks: Masks, size: tuple[int, int]) -> Tensor:
        x = self.decode_latent(zq, masks)
        x = (x + 1) / 2 if self.input_range == (-1.0, 1.0) else x
        return x[..., : size[0], : size[1]]

    @staticmethod
    def mask_bits(masks: Masks) -> Tensor:
        """Raw mask bits per image: m₃ everywhere, m₂ where no coarse patch is (B,)."""
        return mask_section_bits(masks.coarse[0].numel(), masks.coarse.flatten(1).sum(1)).float()

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        """Rate: bits per image of each index section (Huffman code lengths or range-coder
        information of the coded tokens, before byte padding) and of the raw masks."""
        ratios = self._ratios(point)
        release_free_heap()  # what earlier images left in the heap, before full-size maps
        latents, (e8, e16) = self._analyse(x)
        masks = self._route(e8, e16, ratios)
        m = masks.as_dict()
        zq, idx, rate, weighted, area = {}, {}, {}, [], []
        bits = self.symbol_bits(x.device)
        for name, z in zip(GRANULARITIES, latents, strict=True):
            zq[name], idx[name], loss = self.quantizer(z, mask=m[name])
            coded = m[name][:, 0]
            rate[name] = (bits[idx[name]] * coded).flatten(1).sum(1)
            cover = coded.sum() * AREA[name]
            weighted.append(loss * cover)
            area.append(cover)
        rate["masks"] = self.mask_bits(masks)
        counts = sum(
            torch.bincount(idx[n][m[n][:, 0]], minlength=self.quantizer.n_embed) for n in GRANULARITIES
        )
        return CodecOutput(
            x_hat=self._decode(self._hybrid(zq, masks), masks, tuple(x.shape[-2:])),
            rate=rate,
            losses={"vq": sum(weighted) / sum(area)},
            index_counts=counts,
            extras={"indices": idx, "masks": m, "quantizers": [self.quantizer], "ratios": ratios,
                    "latents": dict(zip(GRANULARITIES, latents, strict=True))},  # for a hyperprior
        )

    # ---------------------------------------------------------------- bitstream
    def _streams(self, idx: dict[str, Tensor], masks: Masks) -> list[Tensor]:
        """Symbols of the four sections [masks, coarse, medium, fine] of one image."""
        covered = masks.coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
        mask_bits = torch.cat([masks.coarse.flatten(), masks.medium[~covered]]).long()
        m = masks.as_dict()
        return [mask_bits] + [idx[n][m[n][:, 0]] for n in ("coarse", "medium", "fine")]

    def _sections(self, streams: list[Tensor]) -> list[bytes]:
        coder = self.coder()
        return [fixed.pack(streams[0], 1)] + [coder.encode(s.cpu().numpy()) for s in streams[1:]]

    def _indices(self, latents: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
        return {n: self.quantizer.indices(z) for n, z in zip(GRANULARITIES, latents, strict=True)}

    @torch.no_grad()
    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        if x.shape[0] != 1:
            raise ValueError("compress takes one image (1, 3, H, W)")
        ratios = self._ratios(point)
        release_free_heap()  # what earlier images left in the heap, before full-size maps
        latents, (e8, e16) = self._analyse(x)
        masks = self._route(e8, e16, ratios)
        streams = self._streams(self._indices(latents), masks)
        return EncodedImage(
            sections=self._sections(streams), checksums=[symbols_checksum(s) for s in streams],
            point={"ratios": list(ratios)}, size=(int(x.shape[-2]), int(x.shape[-1])),
        )

    def _read_masks(self, data: bytes, h16: int, w16: int) -> tuple[Masks, Tensor]:
        n16 = h16 * w16
        coarse = fixed.unpack(data, 1, n16, exact=False).bool().view(1, 1, h16, w16)
        n_bits = mask_section_bits(n16, int(coarse.sum()))
        bits = fixed.unpack(data, 1, n_bits)
        if len(data) != fixed.packed_bits(n_bits, 1) // 8:
            raise BitstreamError("the mask section has trailing bytes: the file is corrupted")
        covered = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
        medium = torch.zeros_like(covered)
        medium[~covered] = bits[n16:].bool()
        fine = ~(covered | medium)
        fine = fine.repeat_interleave(2, -2).repeat_interleave(2, -1)
        return Masks(coarse=coarse, medium=medium, fine=fine), bits

    @torch.no_grad()
    def decompress(self, encoded: EncodedImage) -> Tensor:
        if len(encoded.sections) != 4 or len(encoded.checksums) != 4:
            raise BitstreamError("a Control-GIC image has 4 sections (masks, coarse, medium, fine)")
        h, w = encoded.size
        h16, w16 = -(-h // self.multiple), -(-w // self.multiple)
        masks, bits = self._read_masks(encoded.sections[0], h16, w16)
        verify_symbols(bits, encoded.checksums[0], 0)
        device = self.device_of()
        m = masks.as_dict()
        zq = {}
        coder = self.coder()
        for section, name in enumerate(("coarse", "medium", "fine"), start=1):
            mask = m[name][0, 0]
            symbols = torch.from_numpy(coder.decode(encoded.sections[section], int(mask.sum())))
            verify_symbols(symbols, encoded.checksums[section], section)
            idx = torch.zeros(mask.shape, dtype=torch.long)
            idx[mask] = symbols
            zq[name] = self.quantizer.embed(idx[None].to(device))
        masks = Masks(**{k: v.to(device) for k, v in m.items()})
        release_free_heap()  # (see compress)
        return self._decode(self._hybrid(zq, masks), masks, (h, w))

    # ---------------------------------------------------------------- rate control
    def operating_points(self) -> list[dict[str, Any]]:
        return [{"ratios": list(r)} for r in OPERATING_RATIOS]

    def stream_estimate(self, ratios: Sequence[float], h: int, w: int,
                        code_length: float | None = None) -> StreamEstimate:
        """The stream's bits for an h×w image at `ratios` (r₁, r₂, r₃), before encoding: the
        router's token counts for the size padded to 16 (exact per image; with
        `router="official"` its k − 1 rule and entropy ties route a few patches differently),
        the mask bits they imply and `expected_code_length()` per index (pass `code_length`
        to reuse one across many estimates)."""
        r = self._check_ratios(ratios, "ratios")
        n16 = -(-h // self.multiple) * -(-w // self.multiple)
        coarse, medium = token_counts(r, n16)
        fine = 4 * (4 * n16 - 4 * coarse - medium)  # four 4×4 tokens per fine 8×8 cell
        return StreamEstimate(
            mask_bits=int(mask_section_bits(n16, coarse)),
            tokens={"coarse": coarse, "medium": medium, "fine": fine},
            code_length=self.expected_code_length() if code_length is None else code_length,
            pixels=h * w,
        )

    def estimate_bpp(self, point: dict[str, Any], h: int, w: int) -> float:
        return self.stream_estimate(self._ratios(point), h, w).bpp

    def point_for_bpp(
        self, bpp: float, h: int, w: int, *, exact: bool = False, x: Tensor | None = None
    ) -> dict[str, Any]:
        """Ratios on the rate-control curve whose bpp is nearest to `bpp`.

        Default: the stream estimate for an h×w image (`stream_estimate`: exact mask bits,
        coded tokens × the table's expected code length). exact=True: real encoding of `x`
        (1, 3, h, w), bisecting the curve (bpp grows along it) and returning the evaluated
        point nearest to the target.
        """
        grid = curve_ratios()
        if not exact:
            length = self.expected_code_length()
            best = min(grid, key=lambda r: abs(self.stream_estimate(r, h, w, length).bpp - bpp))
            return {"ratios": list(best)}
        if x is None or tuple(x.shape) != (1, 3, h, w):
            raise ValueError("point_for_bpp(exact=True) needs the image x of shape (1, 3, h, w)")
        with torch.no_grad():
            latents, (e8, e16) = self._analyse(x)
            idx = self._indices(latents)

        def real_bpp(i: int) -> float:
            masks = self._route(e8, e16, grid[i])
            return 8 * sum(map(len, self._sections(self._streams(idx, masks)))) / (h * w)

        seen = {}
        lo, hi = 0, len(grid) - 1
        for i in (lo, hi):
            seen[i] = real_bpp(i)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            seen[mid] = real_bpp(mid)
            lo, hi = (mid, hi) if seen[mid] < bpp else (lo, mid)
        best = min(seen, key=lambda i: (abs(seen[i] - bpp), i))
        return {"ratios": list(grid[best])}

    def last_decoder_layer(self) -> Tensor:
        return self.decoder.conv_out.weight


def _choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise RecipeError(f"codec.{key} must be one of {', '.join(allowed)}; got {value!r}")


def count_split(codec: ControlGIC) -> dict[str, int]:
    """Parameters of the encoder (with quant_conv), quantizer and decoder (with
    post_quant_conv), the split the papers report."""
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in codec.named_children()}
    return {
        "encoder": n["encoder"] + n["quant_conv"], "quantizer": n["quantizer"],
        "decoder": n["decoder"] + n["post_quant_conv"], "total": sum(n.values()),
    }

