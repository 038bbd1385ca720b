"""HyperVQ codecs without masks whose every branch is one self-contained container section.

HVQ-ProGIC (one branch per RVQ stage, `hvq_progic.py`) and HVQ-VQGAN (the one index map of
a single-scale VQGAN, `hvq_vqgan.py`) share everything but where their branches' inputs,
indices and codebooks come from and how indices turn back into an image; the forward
rates, the section format and its checks live here, once. (HVQ-CGIC's masked branches keep
their own format: the masks come first and size the index sections.)

Section of branch i = a frame (u16 latent height, u16 latent width, u32 length of the hyper
stream, big-endian), the EntropyBottleneck's rANS string of its hyper-latents, then
HyperVQ's range code of its indices (8 bytes of framing per branch). The latent shape is
checked against the header's image size before anything is decoded: CompressAI's rANS
decoder cannot tell a stream from one of another size, and a wrong size would make it decode
(and allocate) for an image that is not there. The section's checksum is that of its
decoded index symbols: a desync of the hyper-latents changes μ, σ and so the decoded symbols,
which the same check sees. A branch's hyperprior reads only that branch's own input, so
sections decode independently (HVQ-ProGIC's prefixes rely on it).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import torch
from torch import Tensor

from gicl.codecs.base import CodecOutput, EncodedImage, verify_symbols
from gicl.codecs.hyperprior_codec import HyperpriorCodec, rate_losses
from gicl.errors import BitstreamError

FRAME = struct.Struct(">HHI")  # latent height, latent width, hyper stream bytes


Branches = tuple[dict[str, Tensor], dict[str, Tensor]]
"""Per branch, in section order: the continuous input of its H Block, and its indices."""


class BranchSectionsCodec(HyperpriorCodec):
    """A HyperpriorCodec whose branches are coded one framed section each; subclasses say
    where the branches come from and how their indices become an image."""

    def codebooks(self, k: int) -> dict[str, Tensor]:
        """The codebooks (K, d) of the first k branches, by name, in section order."""
        raise NotImplementedError

    def section_count_error(self, k: int) -> str | None:
        """Why k sections are not a decodable image of this codec, or None."""
        raise NotImplementedError

    def forward_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[CodecOutput, Branches]:
        """The backbone's forward and the branches it coded."""
        raise NotImplementedError

    def encode_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[Branches, dict[str, Any]]:
        """One image's branches, and the operating point its header records."""
        raise NotImplementedError

    def decode_branches(self, indices: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """The reconstruction (1, 3, *size) from the decoded indices (1, h, w) by branch."""
        raise NotImplementedError

    # ---------------------------------------------------------------- model
    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        """The backbone's forward with its rates replaced: per branch `hyper_<name>` (R_z)
        and `<name>` (R_ind, eq. 4), bits per image; `losses` adds `rate_ind` and `rate_z`
        in bpp; the backbone's own (static-code) rates stay in `extras["static_rate"]`."""
        out, (inputs, indices) = self.forward_branches(x, point)
        hv = self.hyperprior(inputs, indices, self.codebooks(len(inputs)))
        rate: dict[str, Tensor] = {}
        for name in inputs:
            rate[f"hyper_{name}"], rate[name] = hv.rate_z[name], hv.rate_ind[name]
        losses = {**out.losses, **rate_losses(hv, x.shape[-2] * x.shape[-1])}
        extras = {**out.extras, "static_rate": out.rate}
        return dataclasses.replace(out, rate=rate, losses=losses, extras=extras)

    # ---------------------------------------------------------------- bitstream
    def latent_shape(self, size: tuple[int, int]) -> tuple[int, int]:
        return (-(-size[0] // self.multiple), -(-size[1] // self.multiple))

    @torch.no_grad()
    def compress_with_report(
        self, x: Tensor, point: dict[str, Any] | None = None
    ) -> tuple[EncodedImage, dict[str, float]]:
        """The encoded image and −log₂ of the integer tables each section was coded with
        (bits, keyed as `forward().rate`: `<branch>`, `hyper_<branch>`): what each payload
        should be, to a word or two."""
        if x.shape[0] != 1:
            raise ValueError("compress takes one image (1, 3, H, W)")
        (inputs, indices), header_point = self.encode_branches(x, point)
        streams = self.hyperprior.compress(inputs, indices, self.codebooks(len(inputs)))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        shape = self.latent_shape(size)
        hyper, ind = streams.sections[::2], streams.sections[1::2]
        sections = [FRAME.pack(*shape, len(h)) + h + i for h, i in zip(hyper, ind, strict=True)]
        encoded = EncodedImage(sections=sections, checksums=streams.checksums[1::2],
                               point=header_point, size=size)
        return encoded, streams.table_bits

    def stream_bits(self, encoded: EncodedImage) -> dict[str, int]:
        out = {}
        for name, section in zip(self.codebooks(len(encoded.sections)), encoded.sections, strict=True):
            hyper = FRAME.unpack_from(section)[2]
            out[f"hyper_{name}"], out[name] = 8 * hyper, 8 * (len(section) - FRAME.size - hyper)
        return out

    @torch.no_grad()
    def decompress(self, encoded: EncodedImage) -> Tensor:
        k = len(encoded.sections)
        error = self.section_count_error(k)
        if error:
            raise BitstreamError(error)
        if len(encoded.checksums) < k:
            raise BitstreamError(f"{k} sections but {len(encoded.checksums)} checksums")
        h, w = encoded.size
        shape = self.latent_shape((h, w))
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
        codebooks = self.codebooks(k)
        indices = self.hyperprior.decompress(streams, dict.fromkeys(codebooks, shape), codebooks)
        for i, name in enumerate(codebooks):
            verify_symbols(indices[name].flatten(), encoded.checksums[i], i)
        return self.decode_branches(indices, (h, w))
