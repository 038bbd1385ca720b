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

Bitstream (progressive, as ProGIC's): one section per stage (`branch_sections.py`: a frame,
the stage's hyper-latents, its indices), so section i is stage i as in ProGIC and the
container's prefixes (counted in whole sections, `gicl/bitstream.py`) are exactly the stage
prefixes: a prefix of k sections decodes to ProGIC's stage-k reconstruction of the same
backbone. Every stage's hyperprior reads only that stage's own input, so a stage decodes
without any later one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gicl.codecs.base import CodecOutput, register_codec
from gicl.codecs.branch_sections import Branches, BranchSectionsCodec
from gicl.codecs.hyperprior_codec import check_backbone_keys
from gicl.codecs.progic import ProGIC
from gicl.entropy.hypervq import HYPER_CHANNELS, HYPER_INIT_SCALE, HyperVQ


def branch(i: int) -> str:
    """HyperVQ branch name of RVQ stage i (1-based)."""
    return f"stage{i}"


@register_codec
class HVQProGIC(BranchSectionsCodec):
    codec_id = "hvq_progic"
    multiple = ProGIC.multiple
    progressive = True

    def __init__(self, *, hyper_channels: int = HYPER_CHANNELS, hyper_init_scale: float = HYPER_INIT_SCALE,
                 **backbone: Any) -> None:
        """hyper_channels: width C of every stage's H Block; hyper_init_scale: the hyper-latent
        bottlenecks' initial density width (CompressAI's default 10). Every other key is a ProGIC
        constructor argument (the backbone's)."""
        super().__init__()
        check_backbone_keys(ProGIC, backbone)
        self.backbone = ProGIC(**backbone)
        specs = {branch(i + 1): (vq.embed_dim, vq.n_embed)
                 for i, vq in enumerate(self.backbone.quantizer.stages)}
        self.hyperprior = HyperVQ(specs, channels=hyper_channels, init_scale=hyper_init_scale)

    def codebooks(self, k: int) -> dict[str, Tensor]:
        return {branch(i + 1): vq.embedding.weight
                for i, vq in enumerate(self.backbone.quantizer.stages[:k])}

    def section_count_error(self, k: int) -> str | None:
        """Any prefix of whole stages decodes."""
        n = self.backbone.num_stages
        return None if 1 <= k <= n else f"an HVQ-ProGIC stream holds 1..{n} stage sections, this one {k}"

    def forward_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[CodecOutput, Branches]:
        out = self.backbone(x, point)
        y, indices = out.extras["latent"], out.extras["indices"]
        inputs, residual = {}, y  # r_i = y − ŷ_{<i}, ŷ_{<i} detached as ResidualVQ does
        for i, vq in enumerate(out.extras["quantizers"]):
            inputs[branch(i + 1)] = residual
            residual = residual - vq.embed(indices[:, i]).to(y.dtype).detach()
        return out, (inputs, {branch(i + 1): indices[:, i] for i in range(len(inputs))})

    def encode_branches(self, x: Tensor, point: dict[str, Any] | None) -> tuple[Branches, dict[str, Any]]:
        k = self.backbone.stages_of(point)
        inputs, idx = self.backbone.encode_stages(x, k)
        branches = ({branch(i + 1): inputs[i] for i in range(k)},
                    {branch(i + 1): idx[:, i] for i in range(k)})
        return branches, {"stages": k}

    def decode_branches(self, indices: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """ProGIC's stage-k reconstruction from the first k stages' indices."""
        stacked = torch.stack([indices[branch(i + 1)] for i in range(len(indices))], 1)
        return self.backbone.decode_indices(stacked, size)
