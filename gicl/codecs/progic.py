"""ProGIC (Cao et al. 2026, arXiv 2603.02897): progressive generative image codec with residual VQ.

    x → pixel_unshuffle(8) → g_a (C₁ ch at H/8) → 2× down → attention → y (C₂ ch, H/16)
      → RVQ, N codebooks × K entries → ŷ_{≤i} → g_s(·, stage i) → pixel_shuffle(8) → x̂ᵢ

The bitstream is stage-ordered, one section per codebook, each the fixed-length
⌈log₂K⌉-bit codes of that stage's indices (the paper codes no entropy: §3.1, §4.4), so any
prefix of whole sections decodes to that stage's reconstruction (progressive preview).

Choices where the paper is silent, made to match its parameter counts and FLOPs
(Table 1: 33.11 M / 333.38 GFLOPs base, 14.44 M / 108.28 GFLOPs small, 768×512):
- M counts every DepthConvBlock at C₁: g_a = DepthConvBlock(192→C₁) (DCVC-RT's `enc_1`,
  its 1×1 adaptor included) + (M−1) blocks; g_s = up + M_dec blocks, the first of which is
  the block DCVC-RT puts after its sub-pixel upsampler. With DCVC-RT's full `dec_2`
  (a 192-channel DepthConvBlock after the adaptor) or its 3×3 stride-2 down conv, ProGIC-s
  comes out ≈ 5 % over the paper's 14.44 M (7 % with both), so:
- down = 2×2 stride-2 conv C₁→C₂ (DCVC-RT's `ResidualBlockWithStride2` conv), up = 1×1
  conv C₂→4C₁ + PixelShuffle(2) (DCVC-RT's `SubpelConv2x`), output = 1×1 conv C₁→192.
- Attention at C₂ = 256 (after the down conv, before the up conv) with k = 3 full-width
  DepthConvBlocks (FFN expansion 4) per branch: it adds ≈ 20 GFLOPs at 768×512, the 6.3 %
  of the paper's ablation (Table 4); a narrower attention would not.
- Feature modulation on every DepthConvBlock of g_s, the attention's included ("each
  depthwise convolution block and FFN in g_s"), initialised to the identity.
- Input in [0, 1] as DCVC-RT takes it (no shift to [−1, 1]); the output is not clamped.
- Forward with point `{"stages": k}` quantizes with the first k codebooks only: the
  indices, losses and quantizers it returns are those k.
- `rate["indices"]` is the paper's k·L·⌈H/16⌉·⌈W/16⌉; the bitstream pads each section to
  a whole byte (≤ 7 bits per stage, none when the latent has a multiple of 4 positions).
Result (tests/test_progic_codec.py): base 32.79 M, 321.7 GFLOPs; small 14.83 M,
104.3 GFLOPs (−1.0 % / −3.5 % and +2.7 % / −3.7 % from Table 1).
"""

from __future__ import annotations

import math
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
from gicl.entropy import fixed
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.depthconv import (
    Conv1x1,
    DepthConvAttention,
    DepthConvBlock,
    DepthConvStack,
    Stage,
)
from gicl.nn.vq import ResidualVQ

PIXEL_SHUFFLE = 8
RGB_UNSHUFFLED = 3 * PIXEL_SHUFFLE * PIXEL_SHUFFLE  # 192

# Table 1 / §4.1: C₁, encoder blocks, decoder blocks.
VARIANTS: dict[str, dict[str, int]] = {
    "base": {"channels": 368, "enc_blocks": 8, "dec_blocks": 14},
    "small": {"channels": 256, "enc_blocks": 4, "dec_blocks": 8},
}


class Analysis(nn.Module):
    """g_a: pixel_unshuffle(8) → M DepthConvBlocks at C₁ → 2×2 stride-2 conv → attention."""

    def __init__(
        self, channels: int, latent: int, blocks: int, expansion: int, attn_k: int
    ) -> None:
        super().__init__()
        self.blocks = DepthConvStack(
            [DepthConvBlock(RGB_UNSHUFFLED, channels, expansion=expansion)]
            + [DepthConvBlock(channels, expansion=expansion) for _ in range(blocks - 1)]
        )
        self.down = nn.Conv2d(channels, latent, 2, stride=2)
        self.attention = DepthConvAttention(latent, k=attn_k, expansion=expansion)

    def forward(self, x: Tensor) -> Tensor:
        return self.attention(self.down(self.blocks(F.pixel_unshuffle(x, PIXEL_SHUFFLE))))


class Synthesis(nn.Module):
    """g_s: attention → 1×1 conv + PixelShuffle(2) → M_dec blocks → 1×1 conv → pixel_shuffle(8),
    every block modulated by the pair of the stage being decoded."""

    def __init__(
        self, channels: int, latent: int, blocks: int, expansion: int, attn_k: int, num_stages: int
    ) -> None:
        super().__init__()
        self.attention = DepthConvAttention(
            latent, k=attn_k, expansion=expansion, num_stages=num_stages
        )
        self.up = nn.Sequential(Conv1x1(latent, channels * 4), nn.PixelShuffle(2))
        self.blocks = DepthConvStack([
            DepthConvBlock(channels, expansion=expansion, num_stages=num_stages)
            for _ in range(blocks)
        ])
        self.conv_out = Conv1x1(channels, RGB_UNSHUFFLED)

    def forward(self, y_hat: Tensor, stage: Stage) -> Tensor:
        h = self.blocks(self.up(self.attention(y_hat, stage)), stage)
        # the fused inference path runs channels-last; x̂ leaves in the usual layout
        return F.pixel_shuffle(self.conv_out(h), PIXEL_SHUFFLE).contiguous()


@register_codec
class ProGIC(Codec):
    codec_id = "progic"
    multiple = 16
    progressive = True

    def __init__(
        self, *, variant: str = "base", channels: int | None = None, enc_blocks: int | None = None,
        dec_blocks: int | None = None, latent_channels: int = 256, num_stages: int = 5,
        codebook_size: int = 1024, ffn_expansion: int = 4, attention_blocks: int = 3,
        beta: float = 0.25, legacy_vq: bool = False,
    ) -> None:
        """variant: "base" (C₁ 368, 8/14 blocks) or "small" (256, 4/8); `channels`,
        `enc_blocks`, `dec_blocks` override the variant's values (e.g. tiny smoke models)."""
        super().__init__()
        if variant not in VARIANTS:
            raise RecipeError(
                f"codec.variant must be one of {', '.join(VARIANTS)}, got '{variant}'"
            )
        overrides = {"channels": channels, "enc_blocks": enc_blocks, "dec_blocks": dec_blocks}
        size = {**VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None}}
        checked = {**size, "num_stages": num_stages, "codebook_size": codebook_size}
        for key, value in checked.items():
            if not isinstance(value, int) or value < 1:
                raise RecipeError(f"codec.{key} must be a positive integer, got {value!r}")
        self.variant = variant
        self.num_stages = num_stages
        self.index_bits = max(1, math.ceil(math.log2(codebook_size)))
        self.encoder = Analysis(
            size["channels"], latent_channels, size["enc_blocks"], ffn_expansion, attention_blocks
        )
        self.quantizer = ResidualVQ(
            num_stages, codebook_size, latent_channels, beta=beta, legacy=legacy_vq
        )
        self.decoder = Synthesis(
            size["channels"], latent_channels, size["dec_blocks"], ffn_expansion,
            attention_blocks, num_stages,
        )

    # -- model -------------------------------------------------------------------------

    def stages_of(self, point: dict[str, Any] | None) -> int:
        """The number of codebooks an operating point uses (default: all)."""
        k = (point or {}).get("stages", self.num_stages)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_stages:
            raise UserError(f"ProGIC stages must be an integer in 1..{self.num_stages}, got {k!r}")
        return k

    def check_point(self, point: dict[str, Any]) -> None:
        """A point is `{"stages": k}`, k in 1..N (or `{}` for all N stages)."""
        unknown = sorted(set(point) - {"stages"})
        if unknown:
            raise UserError(f"unknown key '{unknown[0]}' in a ProGIC operating point (known: "
                            f"stages, an integer in 1..{self.num_stages})")
        self.stages_of(point)

    def decode_latent(
        self, y_hat: Tensor, stage: Stage, size: tuple[int, int] | None = None
    ) -> Tensor:
        """x̂ from a prefix sum ŷ_{≤i} with stage i's modulation; `stage` may be a (B,)
        tensor to decode several stages in one batch. Crops to `size` when given.

        The decoder always reads a contiguous (NCHW) ŷ: forward's prefix sums keep the
        encoder's channels-last layout, decode's embedding lookups do not, and a convolution
        of the same values in the two layouts rounds differently on some CPUs (oneDNN on
        AVX2), which would break decode = forward bit for bit."""
        x_hat = self.decoder(y_hat.contiguous(), stage)
        return x_hat if size is None else x_hat[..., : size[0], : size[1]]

    def latent_positions(self, h: int, w: int) -> int:
        return math.ceil(h / self.multiple) * math.ceil(w / self.multiple)

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        """point: {"stages": k} (default N); `"all_stages": True` also returns x̂₁..x̂_k as
        `stage_reconstructions`, decoded in one batch from the same encoder pass."""
        k = self.stages_of(point)
        size = (x.shape[-2], x.shape[-1])
        y = self.encoder(pad_to_multiple(x, self.multiple))
        prefixes, indices, vq_losses = self.quantizer(y, k)
        extras: dict[str, Any] = {
            "indices": indices, "quantizers": list(self.quantizer.stages[:k]), "latent": y,
        }
        recons = None
        if (point or {}).get("all_stages"):
            b = x.shape[0]
            stages = torch.arange(1, k + 1, device=x.device).repeat_interleave(b)
            recons = list(self.decode_latent(torch.cat(prefixes), stages, size).split(b))
            x_hat = recons[-1]
        else:
            x_hat = self.decode_latent(prefixes[-1], k, size)
        bits = float(k * self.index_bits * self.latent_positions(*size))
        return CodecOutput(
            x_hat=x_hat,
            rate={"indices": torch.full((x.shape[0],), bits, device=x.device)},
            losses={"vq": torch.stack(vq_losses).sum()},
            stage_reconstructions=recons,
            stage_losses=list(vq_losses),
            extras=extras,
        )

    def operating_points(self) -> list[dict[str, Any]]:
        return [{"stages": k} for k in range(1, self.num_stages + 1)]

    def point_for_bpp(self, bpp: float, h: int, w: int) -> dict[str, Any]:
        """Exact: stage k costs k·L·⌈h/16⌉·⌈w/16⌉ bits, no forward pass needed."""
        per_stage = self.index_bits * self.latent_positions(h, w) / (h * w)
        k = min(range(1, self.num_stages + 1), key=lambda s: abs(s * per_stage - bpp))
        return {"stages": k}

    # -- bitstream ---------------------------------------------------------------------

    def encode_stages(self, x: Tensor, k: int) -> tuple[list[Tensor], Tensor]:
        """(1, 3, H, W) → the k quantizers' continuous inputs (y, r₂, …, r_k) and their
        (1, k, ⌈H/16⌉, ⌈W/16⌉) indices, the same as forward's (a hyperprior reads the inputs)."""
        residual = self.encoder(pad_to_multiple(x, self.multiple))
        inputs, out = [], []
        for vq in self.quantizer.stages[:k]:
            idx = vq.indices(residual)
            inputs.append(residual)
            residual = residual - vq.embed(idx).to(residual.dtype)
            out.append(idx)
        return inputs, torch.stack(out, 1)

    def encode_indices(self, x: Tensor, k: int) -> Tensor:
        """(1, 3, H, W) → (1, k, ⌈H/16⌉, ⌈W/16⌉) indices, the same as forward's."""
        return self.encode_stages(x, k)[1]

    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        k = self.stages_of(point)
        idx = self.encode_indices(x, k)
        return EncodedImage(
            sections=[fixed.pack(idx[:, i], self.index_bits) for i in range(k)],
            checksums=[symbols_checksum(idx[:, i]) for i in range(k)],
            point={"stages": k},
            size=(x.shape[-2], x.shape[-1]),
        )

    def decompress(self, encoded: EncodedImage) -> Tensor:
        """Decodes as many stages as there are sections: any prefix of whole stages."""
        j = len(encoded.sections)
        if not 1 <= j <= self.num_stages:
            raise BitstreamError(
                f"a ProGIC stream holds 1..{self.num_stages} stage sections, this one {j}"
            )
        if len(encoded.checksums) < j:
            raise BitstreamError(f"{j} sections but {len(encoded.checksums)} checksums")
        h, w = encoded.size
        lh, lw = math.ceil(h / self.multiple), math.ceil(w / self.multiple)
        idx = []
        for i, section in enumerate(encoded.sections):
            symbols = fixed.unpack(section, self.index_bits, lh * lw)
            verify_symbols(symbols, encoded.checksums[i], i)
            if int(symbols.max()) >= self.quantizer.stages[i].n_embed:
                raise BitstreamError(f"section {i} holds indices beyond the codebook")
            idx.append(symbols.view(1, lh, lw))
        return self.decode_indices(torch.stack(idx, 1).to(self.device_of()), (h, w))

    def decode_indices(self, indices: Tensor, size: tuple[int, int]) -> Tensor:
        """x̂_k from the (1, k, h, w) indices of the first k stages, cropped to `size`."""
        return self.decode_latent(self.quantizer.decode(indices), indices.shape[1], size)

    def last_decoder_layer(self) -> Tensor:
        return self.decoder.conv_out.weight
