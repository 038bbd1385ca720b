"""HVQ-ProGIC: ProGIC's residual VQ with a HyperVQ entropy model per RVQ stage (HyperVQ,
Niu et al., arXiv:2512.07192, on ProGIC, Cao et al., arXiv:2603.02897; the HyperVQ paper
names RVQ as a target and gives no RVQ instantiation: this one is ours).

The backbone is gicl's ProGIC (`gicl/codecs/progic.py`), held whole as `backbone` so a ProGIC
model file loads under one renamed prefix (`init.map: {"": "backbone."}`). ProGIC writes
fixed-length ⌈log₂K⌉-bit codes; here HyperVQ codes them instead, one branch per stage:
branch `stage<i>` reads stage i's continuous input (y for stage 1, the residual
r_i = y − ŷ_{<i} for i > 1; the prefix is detached, so the rate's gradient reaches y) and
uses stage i's own codebook for eq. 3's anchors.

Rates (`forward`): bits per image by section — `hyper_stage<i>` (R_z) and `stage<i>` (R_ind,
eq. 4) for the k stages of the point; `losses` adds `rate_ind` and `rate_z` in bpp.

Bitstream (progressive, as ProGIC's): one section per stage, so section i is stage i as in
ProGIC and the container's prefixes (counted in whole sections, `gicl/bitstream.py`) are
exactly the stage prefixes: a prefix of k sections decodes to ProGIC's stage-k
reconstruction of the same backbone. Section i = a frame (u16 latent height, u16 latent width,
u32 length of the hyper stream, big-endian), the EntropyBottleneck's rANS string of stage i's
hyper-latents, then HyperVQ's range code of stage i's indices (8 bytes of framing per stage).
The latent shape is checked against the header's image size before anything is decoded: the
rANS decoder cannot tell a stream from one of another size, and a wrong size would make it
decode (and allocate) for an image that is not there. Its checksum is that of the decoded index
symbols: a desync of the hyper-latents changes μ, σ and so the decoded symbols, which the
same check sees. Every stage's hyperprior reads only that stage's own input, so a stage
decodes without any later one.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import torch
from torch import Tensor

from gicl.codecs.base import CodecOutput, EncodedImage, register_codec, verify_symbols
from gicl.codecs.hyperprior_codec import HyperpriorCodec, check_backbone_keys, rate_losses
from gicl.codecs.progic import ProGIC
from gicl.entropy.hypervq import HYPER_CHANNELS, HyperVQ
from gicl.errors import BitstreamError

FRAME = struct.Struct(">HHI")  # latent height, latent width, hyper stream bytes


def branch(i: int) -> str:
    """HyperVQ branch name of RVQ stage i (1-based)."""
    return f"stage{i}"


@register_codec
class HVQProGIC(HyperpriorCodec):
    codec_id = "hvq_progic"
    multiple = ProGIC.multiple
    progressive = True

    def __init__(self, *, hyper_channels: int = HYPER_CHANNELS, **backbone: Any) -> None:
        """hyper_channels: width C of every stage's H Block. Every other key is a ProGIC
        constructor argument (the backbone's)."""
        super().__init__()
        check_backbone_keys(ProGIC, backbone)
        self.backbone = ProGIC(**backbone)
        specs = {branch(i + 1): (vq.embed_dim, vq.n_embed)
                 for i, vq in enumerate(self.backbone.quantizer.stages)}
        self.hyperprior = HyperVQ(specs, channels=hyper_channels)

    def codebooks(self, k: int) -> dict[str, Tensor]:
        return {branch(i + 1): vq.embedding.weight
                for i, vq in enumerate(self.backbone.quantizer.stages[:k])}

    # ---------------------------------------------------------------- model
    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        out = self.backbone(x, point)
        y, indices = out.extras["latent"], out.extras["indices"]
        k = indices.shape[1]
        inputs, residual = {}, y  # r_i = y − ŷ_{<i}, ŷ_{<i} detached as ResidualVQ does
        for i, vq in enumerate(out.extras["quantizers"]):
            inputs[branch(i + 1)] = residual
            residual = residual - vq.embed(indices[:, i]).to(y.dtype).detach()
        hv = self.hyperprior(inputs, {branch(i + 1): indices[:, i] for i in range(k)},
                             self.codebooks(k))
        rate: dict[str, Tensor] = {}
        for name in inputs:
            rate[f"hyper_{name}"], rate[name] = hv.rate_z[name], hv.rate_ind[name]
        losses = {**out.losses, **rate_losses(hv, x.shape[-2] * x.shape[-1])}
        extras = {**out.extras, "static_rate": out.rate}
        return dataclasses.replace(out, rate=rate, losses=losses, extras=extras)

    # ---------------------------------------------------------------- bitstream
    @torch.no_grad()
    def compress_with_report(
        self, x: Tensor, point: dict[str, Any] | None = None
    ) -> tuple[EncodedImage, dict[str, float]]:
        """The encoded image and, per stage, −log₂ of the integer tables its index section
        was coded with (bits)."""
        if x.shape[0] != 1:
            raise ValueError("compress takes one image (1, 3, H, W)")
        k = self.backbone.stages_of(point)
        inputs, idx = self.backbone.encode_stages(x, k)
        streams = self.hyperprior.compress(
            {branch(i + 1): inputs[i] for i in range(k)},
            {branch(i + 1): idx[:, i] for i in range(k)}, self.codebooks(k),
        )
        hyper, ind = streams.sections[::2], streams.sections[1::2]
        shape = tuple(idx.shape[-2:])
        sections = [FRAME.pack(*shape, len(h)) + h + i for h, i in zip(hyper, ind, strict=True)]
        encoded = EncodedImage(sections=sections, checksums=streams.checksums[1::2],
                               point={"stages": k}, size=(int(x.shape[-2]), int(x.shape[-1])))
        return encoded, streams.index_bits

    @torch.no_grad()
    def decompress(self, encoded: EncodedImage) -> Tensor:
        """Decodes as many stages as there are sections: any prefix of whole stages."""
        k, n = len(encoded.sections), self.backbone.num_stages
        if not 1 <= k <= n:
            raise BitstreamError(f"an HVQ-ProGIC stream holds 1..{n} stage sections, this one {k}")
        if len(encoded.checksums) < k:
            raise BitstreamError(f"{k} sections but {len(encoded.checksums)} checksums")
        h, w = encoded.size
        shape = (-(-h // self.multiple), -(-w // self.multiple))
        streams = []
        for i, section in enumerate(encoded.sections):
            if len(section) < FRAME.size:
                raise BitstreamError(f"section {i} is shorter than its frame: the file is damaged")
            lh, lw, length = FRAME.unpack_from(section)
            if (lh, lw) != shape:
                raise BitstreamError(f"section {i} codes a {lh}×{lw} latent, the image size "
                                     f"{h}×{w} needs {shape[0]}×{shape[1]}: the file is damaged")
            if len(section) < FRAME.size + length:
                raise BitstreamError(f"section {i} is shorter than the hyper stream it announces: "
                                     "the file is damaged or of another model")
            body = section[FRAME.size:]
            streams += [body[:length], body[length:]]
        indices = self.hyperprior.decompress(
            streams, {branch(i + 1): shape for i in range(k)}, self.codebooks(k))
        for i in range(k):
            verify_symbols(indices[branch(i + 1)].flatten(), encoded.checksums[i], i)
        stacked = torch.stack([indices[branch(i + 1)] for i in range(k)], 1)
        return self.backbone.decode_indices(stacked, (h, w))
