"""GLC's generative VQ-VAE as a codec of its own: stage I of GLC (Jia et al., CVPR 2024).

GLC first trains a VQ-VAE (the CodeFormer / Unleashing-Transformers VQGAN of the authors'
`vqgan_arch.py`) with the VQGAN objective, paper eq. 3: ‖x − x̂‖₁ + LPIPS + 0.8·w·L_adv +
L_codebook (ImageNet). Stage II then freezes its encoder, generator and codebook and learns
the transform coder in its latent space.

gicl's `vqgan` codec is the taming-transformers tree (`encoder.down.*`, `quantizer.*`,
`decoder.up.*`), while GLC's VQ-VAE keeps CodeFormer's flat `blocks` lists and one more
ResBlock per decoder level. This codec holds exactly the module of the `glc` codec,
`gicl.nn.glc_blocks.VQAutoEncoder`, under the same attribute name `vqgan`: its state dict is
the `vqgan.*` part of a GLC state dict, tensor for tensor, so stage II loads it with
`init: {from: previous, map: {"vqgan.": "vqgan."}}` (the authors' checkpoint's `vqgan.*`
tensors load into it the same way). The constructor takes the VQ-VAE keys of the `glc`
codec under the same names and defaults, so one recipe anchor feeds both.

As a codec it is a single-codebook VQ: x ∈ [0, 1] → 2x − 1 → encoder (with its 1×1
`quant_conv`) → nearest codeword → generator → (x̂ + 1)/2, with the indices stored at
⌈log₂ K⌉ bits each (`SingleCodebookCodec`): bpp = 14 / 16² ≈ 0.055 for the official build.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from gicl.codecs.base import register_codec
from gicl.codecs.vqgan import SingleCodebookCodec
from gicl.nn.glc_blocks import VQAutoEncoder
from gicl.nn.vq import VectorQuantizer


@register_codec
class GLCVQVAE(SingleCodebookCodec):
    codec_id = "glc_vqvae"

    def __init__(
        self, *, channels: int = 256, nf: int = 128, ch_mult: list[int] = (1, 1, 2, 2, 4),
        res_blocks: int = 2, attn_resolutions: list[int] = (16,), resolution: int = 256,
        codebook_size: int = 16384, attention_window: int = 32, beta: float = 0.25,
        legacy_vq: bool = True,
    ) -> None:
        """The `glc` codec's VQ-VAE keys: channels = latent width (256), nf, ch_mult,
        res_blocks (encoder; the generator has one more per level), attn_resolutions,
        resolution (where attention sits), codebook_size (16384), attention_window (latent
        window of attention in eval mode; 0 = global), beta and legacy_vq (β on the codebook
        term, as the official quantizer)."""
        super().__init__()
        self.vqgan = VQAutoEncoder(
            nf=nf, emb_dim=channels, ch_mult=list(ch_mult), res_blocks=res_blocks,
            resolution=resolution, attn_resolutions=list(attn_resolutions),
            codebook_size=codebook_size, patch=attention_window, beta=beta, legacy_vq=legacy_vq,
        )
        self.index_bits = max(1, math.ceil(math.log2(codebook_size)))
        self.multiple = 2 ** (len(ch_mult) - 1)

    def analysis(self, x: Tensor) -> Tensor:
        return self.vqgan.encoder(x)

    def synthesis(self, zq: Tensor) -> Tensor:
        return self.vqgan.generator(zq)

    def codebook(self) -> VectorQuantizer:
        return self.vqgan.quantize

    def parameter_groups(self) -> dict[str, nn.Module]:
        """The `glc` codec's names for the same modules: vqgan_encoder, vqgan_generator,
        vqgan_codebook."""
        return {"vqgan_encoder": self.vqgan.encoder, "vqgan_generator": self.vqgan.generator,
                "vqgan_codebook": self.vqgan.quantize}

    def last_decoder_layer(self) -> Tensor:
        return self.vqgan.generator.last_layer()
