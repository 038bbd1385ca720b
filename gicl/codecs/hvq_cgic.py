"""HVQ-CGIC (Niu et al., arXiv:2512.07192): Control-GIC carrying a HyperVQ entropy model.

The backbone is gicl's Control-GIC (`gicl/codecs/controlgic.py`), held whole as `backbone`
so that a Control-GIC model file (trained by gicl or imported with `gicl import controlgic`)
loads onto it under one renamed prefix (`init.map: {"": "backbone."}`). Control-GIC's static
Huffman table is replaced by HyperVQ (`gicl/entropy/hypervq.py`): three masked branches
(fine H/4, medium H/8, coarse H/16) over the one shared codebook, each with its own H Block,
hyper-latents through an EntropyBottleneck, and the eq. 3 categorical model for the indices.

Rates (`forward`): bits per image by section — `masks` (raw bits, as Control-GIC counts
them), `hyper_<g>` (R_z of branch g: −log₂ of the EntropyBottleneck likelihoods) and `<g>`
(R_ind of branch g, eq. 4 over the positions present in g's mask only). Both are
differentiable; `losses` adds `rate_ind` and `rate_z` in bits per pixel (batch mean), the
terms the stage B/C modules weight. The static-table bits of the same tokens stay in
`extras["static_rate"]` for comparison (the paper's Table S4).

Bitstream: sections [masks, coarse, medium, fine], as Control-GIC's. Masks are written
exactly as Control-GIC writes them; a branch's section is the length of its hyper stream
(varint), the hyper stream (the EntropyBottleneck's rANS string, empty when every hyper-latent
is its median) and the index stream (HyperVQ's exact 24-bit range code with snapped μ, σ:
machine-independent integer tables). One section per branch, not two: each container section
carries 7 bytes of length and checks, ~4 % of the file at the lowest operating point on
Kodak. Checksums: the mask bits, then each branch's index symbols (a desync of its hyper-
latents changes μ, σ and so the decoded symbols, which that check sees).

Rate control uses the backbone's static-table curve (`point_for_bpp`): the ratios for a
target bpp under the Huffman code, which the hyperprior then codes in fewer bits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from gicl.bitstream import length_prefixed, split_length_prefixed
from gicl.codecs.base import (
    CodecOutput,
    EncodedImage,
    register_codec,
    symbols_checksum,
    verify_symbols,
)
from gicl.codecs.controlgic import GRANULARITIES, ControlGIC
from gicl.codecs.hyperprior_codec import HyperpriorCodec, check_backbone_keys, rate_losses
from gicl.codecs.routing import Masks
from gicl.entropy import fixed
from gicl.entropy.hypervq import HYPER_CHANNELS, HYPER_INIT_SCALE, HyperVQ, present
from gicl.errors import BitstreamError

SECTION_ORDER = ("coarse", "medium", "fine")  # Control-GIC's order: a coarse token first


@register_codec
class HVQCGIC(HyperpriorCodec):
    codec_id = "hvq_cgic"
    multiple = ControlGIC.multiple

    def __init__(self, *, hyper_channels: int = HYPER_CHANNELS, hyper_init_scale: float = HYPER_INIT_SCALE,
                 **backbone: Any) -> None:
        """hyper_channels: width C of every H Block (72: 1.59 M parameters for the paper's
        d = 4, the paper's 132.30 M − 130.69 M = 1.61 M). hyper_init_scale: the hyper-latent
        bottlenecks' initial density width (CompressAI's default 10). Every other key is a
        Control-GIC constructor argument (the backbone's)."""
        super().__init__()
        check_backbone_keys(ControlGIC, backbone)
        self.backbone = ControlGIC(**backbone)
        q = self.backbone.quantizer
        self.hyperprior = HyperVQ({g: (q.embed_dim, q.n_embed) for g in SECTION_ORDER},
                                  channels=hyper_channels, init_scale=hyper_init_scale)

    # ---------------------------------------------------------------- entropy model
    def codebook(self) -> Tensor:
        return self.backbone.quantizer.embedding.weight

    # ---------------------------------------------------------------- model
    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        out = self.backbone(x, point)
        latents, indices, masks = (out.extras[k] for k in ("latents", "indices", "masks"))
        hv = self.hyperprior({g: latents[g] for g in SECTION_ORDER}, indices, self.codebook(), masks)
        rate = {"masks": out.rate["masks"]}
        for g in SECTION_ORDER:
            rate[f"hyper_{g}"], rate[g] = hv.rate_z[g], hv.rate_ind[g]
        pixels = x.shape[-2] * x.shape[-1]
        losses = {**out.losses, **rate_losses(hv, pixels)}
        static = {g: out.rate[g] for g in GRANULARITIES}
        extras = {**out.extras, "static_rate": static}
        return dataclasses.replace(out, rate=rate, losses=losses, extras=extras)

    # ---------------------------------------------------------------- bitstream
    @torch.no_grad()
    def compress_with_report(
        self, x: Tensor, point: dict[str, Any] | None = None
    ) -> tuple[EncodedImage, dict[str, float]]:
        """The encoded image and −log₂ of the integer tables each section was coded with
        (bits, keyed as `forward().rate`: `<branch>`, `hyper_<branch>`): what each payload
        should be, to a word or two."""
        if x.shape[0] != 1:
            raise ValueError("compress takes one image (1, 3, H, W)")
        b = self.backbone
        ratios = b._ratios(point)
        latents, (e8, e16) = b._analyse(x)
        masks = b._route(e8, e16, ratios)
        indices = b._indices(latents)
        mask_bits = b._streams(indices, masks)[0]
        lat = dict(zip(GRANULARITIES, latents, strict=True))
        streams = self.hyperprior.compress(
            {g: lat[g] for g in SECTION_ORDER}, indices, self.codebook(), masks.as_dict()
        )
        hyper, ind = streams.sections[::2], streams.sections[1::2]
        encoded = EncodedImage(
            sections=[fixed.pack(mask_bits, 1), *map(length_prefixed, hyper, ind)],
            checksums=[symbols_checksum(mask_bits), *streams.checksums[1::2]],
            point={"ratios": list(ratios)}, size=(int(x.shape[-2]), int(x.shape[-1])),
        )
        return encoded, streams.table_bits

    def stream_bits(self, encoded: EncodedImage) -> dict[str, int]:
        """Bits per stream; a branch's length prefix, like the container's framing, is not payload."""
        out = {}
        for g, section in zip(SECTION_ORDER, encoded.sections[1:], strict=True):
            hyper, ind = split_length_prefixed(section, f"{g} section")
            out[f"hyper_{g}"], out[g] = 8 * len(hyper), 8 * len(ind)
        return out

    @torch.no_grad()
    def decompress(self, encoded: EncodedImage) -> Tensor:
        n = 1 + len(SECTION_ORDER)
        if len(encoded.sections) != n or len(encoded.checksums) != n:
            raise BitstreamError(f"an HVQ-CGIC image has {n} sections (masks, then the hyper-latents "
                                 "and indices of coarse, medium, fine)")
        b = self.backbone
        h, w = encoded.size
        h16, w16 = -(-h // self.multiple), -(-w // self.multiple)
        masks, bits = b._read_masks(encoded.sections[0], h16, w16)
        verify_symbols(bits, encoded.checksums[0], 0)
        device = self.device_of()
        m = {k: v.to(device) for k, v in masks.as_dict().items()}
        shapes = {g: tuple(m[g].shape[-2:]) for g in SECTION_ORDER}
        streams = [part for g, section in zip(SECTION_ORDER, encoded.sections[1:], strict=True)
                   for part in split_length_prefixed(section, f"{g} section")]
        indices = self.hyperprior.decompress(streams, shapes, self.codebook(), m)
        for i, g in enumerate(SECTION_ORDER, start=1):
            verify_symbols(present(indices[g], m[g]), encoded.checksums[i], i)
        zq = {g: b.quantizer.embed(indices[g]) for g in GRANULARITIES}
        masks = Masks(**m)
        return b._decode(b._hybrid(zq, masks), masks, (h, w))

    # ---------------------------------------------------------------- the backbone's
    def behaviour(self) -> dict[str, Any]:
        return self.backbone.behaviour()
