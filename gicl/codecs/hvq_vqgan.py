"""HVQ-VQGAN: the single-scale VQGAN codec with a HyperVQ entropy model for its indices
(HyperVQ, Niu et al., arXiv:2512.07192, which reports it as a plug-in for single-scale VQ;
the paper gives no single-scale instantiation's details: this one is ours).

The backbone is gicl's VQGAN (`gicl/codecs/vqgan.py`), held whole as `backbone` so a VQGAN
model file (a `recipes/vqgan.yaml` run's final.pt) loads under one renamed prefix
(`init.map: {"": "backbone."}`). VQGAN writes fixed-length ⌈log₂K⌉-bit codes; here one
HyperVQ branch, `indices`, codes them: its H Block reads the latent before VQ, its anchors
are the VQGAN codebook.

Rates (`forward`): bits per image — `hyper_indices` (R_z) and `indices` (R_ind, eq. 4);
`losses` adds `rate_ind` and `rate_z` in bpp; the fixed-length bits stay in
`extras["static_rate"]`.

Bitstream: one section (`branch_sections.py`: a frame, the hyper-latents, the indices), the
same format as one HVQ-ProGIC stage.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gicl.codecs.base import CodecOutput, register_codec
from gicl.codecs.branch_sections import Branches, BranchSectionsCodec
from gicl.codecs.hyperprior_codec import check_backbone_keys
from gicl.codecs.vqgan import VQGAN
from gicl.entropy.hypervq import HYPER_CHANNELS, HYPER_INIT_SCALE, HyperVQ

BRANCH = "indices"  # VQGAN's own rate key: `static_rate` and `rate` name the same tokens


@register_codec
class HVQVQGAN(BranchSectionsCodec):
    codec_id = "hvq_vqgan"

    def __init__(self, *, hyper_channels: int = HYPER_CHANNELS, hyper_init_scale: float = HYPER_INIT_SCALE,
                 **backbone: Any) -> None:
        """hyper_channels: width C of the H Block; hyper_init_scale: the hyper-latent
        bottleneck's initial density width (CompressAI's default 10). Every other key is a
        VQGAN constructor argument (the backbone's)."""
        super().__init__()
        check_backbone_keys(VQGAN, backbone)
        self.backbone = VQGAN(**backbone)
        self.multiple = self.backbone.multiple
        q = self.backbone.quantizer
        self.hyperprior = HyperVQ({BRANCH: (q.embed_dim, q.n_embed)}, channels=hyper_channels,
                                  init_scale=hyper_init_scale)

    def codebooks(self, k: int) -> dict[str, Tensor]:
        return {BRANCH: self.backbone.quantizer.embedding.weight}

    def section_count_error(self, k: int) -> str | None:
        return None if k == 1 else f"an HVQ-VQGAN image has 1 section, this one {k}"

    def forward_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[CodecOutput, Branches]:
        out = self.backbone(x, point)
        return out, ({BRANCH: out.extras["latent"]}, {BRANCH: out.extras["indices"]})

    def encode_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[Branches, dict[str, Any]]:
        z = self.backbone.latent(x)
        return ({BRANCH: z}, {BRANCH: self.backbone.quantizer.indices(z)}), {}

    def decode_branches(self, indices: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        return self.backbone.decode_indices(indices[BRANCH], size)
