"""Single-scale VQGAN / MoVQ codec: encoder → VQ → decoder, indices as fixed-length codes.

This is the shared first stage (taming-transformers, Esser et al., CVPR 2021, arXiv
2012.09841): Control-GIC's training protocol, HyperVQ stage A, and a codec of its own
("Fine-tuned VQ"): bpp = ⌈log₂K⌉ / f². GLC's stage I trains the same kind of model under
the authors' CodeFormer module names (`gicl.codecs.glc_vqvae`, sharing the coding here).
"""

from __future__ import annotations

import math
from typing import Any

import torch
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
from gicl.errors import BitstreamError
from gicl.nn.blocks import Decoder, Encoder, set_attention_window
from gicl.nn.vq import VectorQuantizer


class SingleCodebookCodec(Codec):
    """An autoencoder whose bitstream is its VQ indices at fixed length, ⌈log₂K⌉ bits each.

    Subclasses supply the model: `analysis` (x ∈ [−1, 1] → latent before VQ), `synthesis`
    (quantized latent → x̂ ∈ ≈[−1, 1]), `codebook` (the VectorQuantizer) and set
    `index_bits` and `multiple`; the coding, the [0, 1] ↔ [−1, 1] shift and the padding are
    shared (gicl's `vqgan` and GLC's VQ-VAE `glc_vqvae` differ only in module trees).
    """

    index_bits: int

    def analysis(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def synthesis(self, zq: Tensor) -> Tensor:
        raise NotImplementedError

    def codebook(self) -> VectorQuantizer:
        raise NotImplementedError

    def latent(self, x: Tensor) -> Tensor:
        """The latent before VQ of x ∈ [0, 1], padded to `multiple`."""
        return self.analysis(pad_to_multiple(x, self.multiple) * 2 - 1)

    def encode_indices(self, x: Tensor) -> Tensor:
        return self.codebook().indices(self.latent(x))

    def decode_indices(self, idx: Tensor, size: tuple[int, int]) -> Tensor:
        return self._decode(self.codebook().embed(idx), size)

    def _decode(self, zq: Tensor, size: tuple[int, int]) -> Tensor:
        return ((self.synthesis(zq) + 1) / 2)[..., : size[0], : size[1]]

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        h, w = x.shape[-2:]
        quantizer = self.codebook()
        z = self.latent(x)
        zq, idx, vq_loss = quantizer(z)
        bits = float(idx[0].numel() * self.index_bits)
        return CodecOutput(
            x_hat=self._decode(zq, (h, w)),
            rate={"indices": torch.full((x.shape[0],), bits, device=x.device)},
            losses={"vq": vq_loss},
            extras={"latent": z, "indices": idx, "quantizers": [quantizer]},  # latent: HVQ-VQGAN's
        )

    def operating_points(self) -> list[dict[str, Any]]:
        return [{}]

    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        idx = self.encode_indices(x)
        return EncodedImage(
            sections=[fixed.pack(idx, self.index_bits)], checksums=[symbols_checksum(idx)],
            point={}, size=(x.shape[-2], x.shape[-1]),
        )

    def decompress(self, encoded: EncodedImage) -> Tensor:
        if len(encoded.sections) != 1:
            raise BitstreamError(f"a {self.codec_id} image has 1 section, this one "
                                 f"{len(encoded.sections)}")
        h, w = encoded.size
        lh, lw = -(-h // self.multiple), -(-w // self.multiple)
        idx = fixed.unpack(encoded.sections[0], self.index_bits, lh * lw)
        idx = idx.clamp_max(self.codebook().n_embed - 1)
        verify_symbols(idx, encoded.checksums[0], 0)
        return self.decode_indices(idx.view(1, lh, lw).to(self.device_of()), (h, w))


@register_codec
class VQGAN(SingleCodebookCodec):
    codec_id = "vqgan"

    def __init__(
        self, *, ch: int = 128, ch_mult: list[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
        attn_resolutions: list[int] = (16,), resolution: int = 256, z_channels: int = 256,
        embed_dim: int = 256, n_embed: int = 16384, beta: float = 0.25, legacy_vq: bool = False,
        movq: bool = False, dropout: float = 0.0, attention_window: int = 32,
    ) -> None:
        """attention_window: latent window for attention at inference (GLC: 32); 0 = global."""
        super().__init__()
        common = dict(
            ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
            attn_resolutions=list(attn_resolutions), resolution=resolution,
            z_channels=z_channels, dropout=dropout,
        )
        self.encoder = Encoder(**common)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.quantizer = VectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy_vq)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.decoder = Decoder(**common, zq_channels=embed_dim if movq else None)
        self.movq = movq
        self.index_bits = max(1, math.ceil(math.log2(n_embed)))
        self.multiple = 2 ** (len(ch_mult) - 1)
        set_attention_window(self, attention_window)

    def analysis(self, x: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(x))

    def synthesis(self, zq: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(zq), zq if self.movq else None)

    def codebook(self) -> VectorQuantizer:
        return self.quantizer

    def last_decoder_layer(self) -> Tensor:
        return self.decoder.conv_out.weight
