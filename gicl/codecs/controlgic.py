"""Control-GIC (Li et al., ICLR 2025): one VQGAN with three token granularities routed by
patch information density, and a static entropy code for the indices.

Architecture (paper §3; shapes follow the official state dict, 130.36 M parameters):
- `GranularEncoder`: the taming encoder (ch 128, ch_mult [1,2,2,4,4], 2 res blocks,
  attention at H/8). Its level outputs at H/4, H/8 and H/16 each go through their own head
  (Res–Attn–Res mid block, GroupNorm, SiLU, 3×3 conv to z = 4 channels); the encoder's own
  mid/norm_out/conv_out is the coarse head. 1×1 `quant_conv`, one shared codebook K = 1024,
  d = 4.
- Router (`routing.py`): masks m₃ (coarse, H/16), m₂ (medium, H/8), m₁ (fine, H/4) from
  ratios (r₁ fine, r₂ medium, r₃ coarse), per image with exact counts.
- Hybrid latent (eq. 2): ẑ = ẑ₁⊙m₁ + up2(ẑ₂⊙m₂) + up4(ẑ₃⊙m₃), nearest upsampling.
- `ConditionalDecoder` (eq. 3–4), MoVQ SpatialNorm conditioned on ẑ everywhere, 3 res
  blocks per level, attention at H/8. Three conv_in + mid branches, each at its own
  resolution: the coarse branch runs on avgpool4(ẑ) at H/16 and starts the decoder; before
  the H/8 level the medium positions are replaced by the medium branch on avgpool2(ẑ); before
  the H/4 level the fine positions by the fine branch on ẑ. Other positions keep the
  decoder's own features (eq. 4's D(y)⊙(1−m) term). The official code instead runs all
  three branches at H/4 and average-pools afterwards, and zeroes the non-medium, non-coarse
  positions at H/8; we follow the paper's equations, which also keeps the coarse and medium
  branches 16× and 4× cheaper. Parameter shapes are unchanged.
- VQ loss: the masked loss of each granularity weighted by the area its tokens cover, which
  equals the official loss on the hybrid latent at H/4 (where a coarse token appears 16×).
  β = 0.25 on the commitment term by default; the official code (taming "legacy") puts it on
  the codebook term: `legacy_vq=True`.

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
that from the model's table (and returns 10.3875 before any table is accumulated).
`point_for_bpp` searches a one-parameter curve of ratio triples through the paper's Table 2
rows (from all-coarse to all-fine), so every bpp maps to one documented triple; with
`exact=True` it searches the same curve by real encoding of the given image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
from gicl.codecs.routing import Masks, patch_entropies, route
from gicl.entropy import fixed
from gicl.entropy.huffman import HuffmanCode
from gicl.entropy.static_range import StaticRangeCoder
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.blocks import Decoder, Encoder, MidBlock, group_norm, set_attention_window
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


def theoretical_bpp(ratios: Sequence[float], L: float = PAPER_L) -> float:
    """Eq. 12–13: bpp of indices L/256·(16r₁ + 4r₂ + r₃) plus masks (4r₁ + r₂)/256."""
    r1, r2, r3 = ratios
    return L / 256 * (16 * r1 + 4 * r2 + r3) + (4 * r1 + r2) / 256


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
        self.conv_out_fine = nn.Conv2d(c_fine, z_channels, 3, padding=1)
        self.mid_medium = MidBlock(c_medium, dropout=dropout)
        self.norm_out_medium = group_norm(c_medium)
        self.conv_out_medium = nn.Conv2d(c_medium, z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """(z_fine at H/4, z_medium at H/8, z_coarse at H/16)."""
        *_, f_fine, f_medium, f_coarse = self.forward_levels(x)
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
        self.conv_in_medium = nn.Conv2d(z_channels, c_medium, 3, padding=1)
        self.mid_medium = MidBlock(c_medium, dropout=dropout, zq_channels=zq_channels)
        self.conv_in_fine = nn.Conv2d(z_channels, c_fine, 3, padding=1)
        self.mid_fine = MidBlock(c_fine, dropout=dropout, zq_channels=zq_channels)

    def forward(  # type: ignore[override]
        self, z: Tensor, zq: Tensor, medium: Tensor, fine: Tensor
    ) -> Tensor:
        """z: post-quant hybrid latent at H/4; zq: the hybrid codewords (SpatialNorm input);
        medium (B, 1, H/8, W/8) and fine (B, 1, H/4, W/4): bool masks."""
        h = self.mid(self.conv_in(F.avg_pool2d(z, 4)), zq)
        top = len(self.up) - 1
        for i in reversed(range(len(self.up))):
            if i == top - 1:
                branch = self.mid_medium(self.conv_in_medium(F.avg_pool2d(z, 2)), zq)
                h = torch.where(medium, branch, h)
            elif i == top - 2:
                h = torch.where(fine, self.mid_fine(self.conv_in_fine(z), zq), h)
            level = self.up[i]
            h = level(h, zq)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


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
    ) -> None:
        """attention_window: latent tokens per side of an inference attention window (0 =
        global). default_ratios: (r₁ fine, r₂ medium, r₃ coarse) when forward gets no point.
        entropy_coder: "huffman" (the paper) or "range"."""
        super().__init__()
        if len(ch_mult) != 5:
            raise RecipeError(
                f"codec.ch_mult needs 5 levels (tokens at H/4, H/8, H/16), got {list(ch_mult)}"
            )
        if entropy_coder not in ("huffman", "range"):
            raise RecipeError(f"codec.entropy_coder must be 'huffman' or 'range', got '{entropy_coder}'")
        common = dict(
            ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
            attn_resolutions=list(attn_resolutions), resolution=resolution,
            z_channels=z_channels, dropout=dropout,
        )
        self.encoder = GranularEncoder(**common)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.quantizer = VectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy_vq)
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
            else:
                coder = StaticRangeCoder(table.numpy())
            # holding the tensor keeps its id from being reused by another table
            self._coders[kind] = cached = (t, t._version, table, coder)
        return cached[3]

    def coder(self) -> HuffmanCode | StaticRangeCoder:
        return self._table_coder(self.entropy_coder)

    def symbol_bits(self, device: torch.device) -> Tensor:
        """(K,) bits each index costs: Huffman code lengths, or −log₂ p for the range coder."""
        c = self.coder()
        bits = c.lengths if isinstance(c, HuffmanCode) else c.information
        return torch.as_tensor(bits, dtype=torch.float32).to(device, non_blocking=True)

    def mean_code_length(self) -> float:
        """Eq. 12's L: the mean Huffman code length over all K indices (unweighted, as the
        paper's 10.3875 > log₂K shows); 10.3875 until a table has been accumulated."""
        if self.quantizer.n_embed == 1024 and bool((self.index_frequencies == 1).all()):
            return PAPER_L
        return float(self._table_coder("huffman").lengths.mean())

    # ---------------------------------------------------------------- model
    @staticmethod
    def _check_ratios(ratios: Any, where: str) -> tuple[float, float, float]:
        try:
            r = tuple(float(v) for v in ratios)
        except (TypeError, ValueError):
            r = ()
        if len(r) != 3 or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6:
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

    def _analyse(self, x: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Latents (fine, medium, coarse) and patch entropies (e8, e16) of x padded to 16."""
        xp = pad_to_multiple(x, self.multiple) * 2 - 1
        latents = tuple(self.quant_conv(z) for z in self.encoder(xp))
        return latents, patch_entropies(xp)  # type: ignore[return-value]

    @staticmethod
    def _hybrid(zq: dict[str, Tensor], masks: Masks) -> Tensor:
        """Eq. 2 (nearest upsampling)."""
        m = masks.as_dict()
        out = zq["fine"] * m["fine"]
        out = out + F.interpolate(zq["medium"] * m["medium"], scale_factor=2.0, mode="nearest")
        return out + F.interpolate(zq["coarse"] * m["coarse"], scale_factor=4.0, mode="nearest")

    def _decode(self, zq: Tensor, masks: Masks, size: tuple[int, int]) -> Tensor:
        x = self.decoder(self.post_quant_conv(zq), zq, masks.medium, masks.fine)
        return ((x + 1) / 2)[..., : size[0], : size[1]]

    @staticmethod
    def mask_bits(masks: Masks) -> Tensor:
        """Raw mask bits per image: m₃ everywhere, m₂ where no coarse patch is (B,)."""
        n16 = masks.coarse[0].numel()
        return (5 * n16 - 4 * masks.coarse.flatten(1).sum(1)).float()

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        """Rate: bits per image of each index section (Huffman code lengths or range-coder
        information of the coded tokens, before byte padding) and of the raw masks."""
        ratios = self._ratios(point)
        latents, (e8, e16) = self._analyse(x)
        masks = route(e8, e16, ratios)
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
            extras={"indices": idx, "masks": m, "quantizers": [self.quantizer], "ratios": ratios},
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
        latents, (e8, e16) = self._analyse(x)
        masks = route(e8, e16, ratios)
        streams = self._streams(self._indices(latents), masks)
        return EncodedImage(
            sections=self._sections(streams), checksums=[symbols_checksum(s) for s in streams],
            point={"ratios": list(ratios)}, size=(int(x.shape[-2]), int(x.shape[-1])),
        )

    def _read_masks(self, data: bytes, h16: int, w16: int) -> tuple[Masks, Tensor]:
        n16 = h16 * w16
        coarse = fixed.unpack(data, 1, n16).bool().view(1, 1, h16, w16)
        n_bits = 5 * n16 - 4 * int(coarse.sum())
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
        return self._decode(self._hybrid(zq, masks), masks, (h, w))

    # ---------------------------------------------------------------- rate control
    def operating_points(self) -> list[dict[str, Any]]:
        return [{"ratios": list(r)} for r in OPERATING_RATIOS]

    def point_for_bpp(
        self, bpp: float, h: int, w: int, *, exact: bool = False, x: Tensor | None = None
    ) -> dict[str, Any]:
        """Ratios on the rate-control curve whose bpp is nearest to `bpp`.

        Default: eq. 12–13 with L = `mean_code_length()` (size-independent, as in the paper).
        exact=True: real encoding of `x` (1, 3, h, w), bisecting the curve (bpp grows along
        it) and returning the evaluated point nearest to the target.
        """
        grid = curve_ratios()
        if not exact:
            L = self.mean_code_length()
            best = min(grid, key=lambda r: abs(theoretical_bpp(r, L) - bpp))
            return {"ratios": list(best)}
        if x is None or tuple(x.shape) != (1, 3, h, w):
            raise ValueError("point_for_bpp(exact=True) needs the image x of shape (1, 3, h, w)")
        with torch.no_grad():
            latents, (e8, e16) = self._analyse(x)
            idx = self._indices(latents)

        def real_bpp(i: int) -> float:
            masks = route(e8, e16, grid[i])
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


def count_split(codec: ControlGIC) -> dict[str, int]:
    """Parameters of the encoder (with quant_conv), quantizer and decoder (with
    post_quant_conv), the split the papers report."""
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in codec.named_children()}
    return {
        "encoder": n["encoder"] + n["quant_conv"], "quantizer": n["quantizer"],
        "decoder": n["decoder"] + n["post_quant_conv"], "total": sum(n.values()),
    }

