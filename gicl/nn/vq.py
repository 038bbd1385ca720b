"""Vector quantizers: single codebook (VQGAN, Control-GIC, GLC) and residual (ProGIC).

Written here rather than taken from vector-quantize-pytorch because the papers fix the
exact loss form (`||sg[z] − zq||² + β||sg[zq] − z||²`, GLC eq. 4, with taming's "legacy"
placement of β selectable) and the codecs need plain index tensors for their bitstreams;
that library's EMA/affine variants and loss bookkeeping do not reproduce these terms.

Usage statistics (per-code hit counts) are accumulated on device in a non-persistent
buffer with `bincount` — never a per-index `.item()` — and summed across ranks only when
read (`usage_counts`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor, nn


def nearest_codeword(z: Tensor, codebook: Tensor, chunk: int = 8192) -> Tensor:
    """Index of the L2-nearest codeword for each row of z (N, d); chunked to bound memory."""
    c2 = (codebook * codebook).sum(1)
    out = []
    for part in z.split(chunk):
        d = c2[None, :] - 2.0 * part @ codebook.t()
        out.append(d.argmin(1))
    return torch.cat(out) if out else z.new_zeros(0, dtype=torch.long)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour VQ with straight-through gradients, on (B, d, H, W) latents."""

    def __init__(
        self, n_embed: int, embed_dim: int, *, beta: float = 0.25, legacy: bool = False
    ) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.beta, self.legacy = n_embed, embed_dim, beta, legacy
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.register_buffer("usage", torch.zeros(n_embed, dtype=torch.long), persistent=False)

    def indices(self, z: Tensor) -> Tensor:
        """(B, d, H, W) → (B, H, W) codeword indices."""
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d")
        return nearest_codeword(flat.float(), self.embedding.weight.float()).view(b, h, w)

    def embed(self, indices: Tensor) -> Tensor:
        """(B, H, W) indices → (B, d, H, W) codewords."""
        # contiguous: a channels-last view would make convolutions round differently from
        # the forward pass, and decode must equal forward bit for bit
        return rearrange(self.embedding(indices), "b h w d -> b d h w").contiguous()

    def forward(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize z. Returns (straight-through zq, indices, vq loss).

        mask (B, 1, H, W), optional: positions that exist in the bitstream; the loss and the
        usage counts cover only those (Control-GIC's routed tokens).
        """
        idx = self.indices(z)
        zq = self.embed(idx).to(z.dtype)
        codebook_term = (z.detach() - zq) ** 2
        commit_term = (zq.detach() - z) ** 2
        if self.legacy:  # taming "legacy": β on the codebook term
            per = self.beta * codebook_term + commit_term
        else:  # paper form (GLC eq. 4): β on the commitment term
            per = codebook_term + self.beta * commit_term
        if mask is None:
            loss = per.mean()
        else:
            m = mask.to(per.dtype)
            loss = (per * m).sum() / (m.sum() * per.shape[1]).clamp_min(1.0)
        if self.training:
            self.record_usage(idx if mask is None else idx[mask[:, 0].bool()])
        # zq + (z − sg[z]) has the value of zq exactly (x − x = 0 in floating point), so
        # forward and decompress agree bit-for-bit, and the gradient of z passes straight through
        return zq + (z - z.detach()), idx, loss

    @torch.no_grad()
    def record_usage(self, idx: Tensor) -> None:
        self.usage += torch.bincount(idx.reshape(-1), minlength=self.n_embed)

    def usage_counts(self, reset: bool = False) -> Tensor:
        """Hit counts since the last reset, summed over all ranks (collective under DDP)."""
        counts = self.usage.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        if reset:
            self.usage.zero_()
        return counts


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of the usage distribution: how many codes are effectively used."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


class ResidualVQ(nn.Module):
    """N stages of VQ on successive residuals (ProGIC eq. 3–5), one codebook per stage.

    forward returns the partial sums ŷ₁, ŷ₁+r̂₂, … so a progressive codec can decode every
    prefix from one encoder pass.
    """

    def __init__(
        self, num_stages: int, n_embed: int, embed_dim: int, *, beta: float = 0.25,
        legacy: bool = False,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            VectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy)
            for _ in range(num_stages)
        )

    def forward(self, y: Tensor, num_stages: int | None = None) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """Returns (prefix sums ŷ_{≤i} with straight-through gradients, indices (B,N,H,W),
        per-stage vq losses)."""
        n = num_stages or len(self.stages)
        residual, total = y, torch.zeros_like(y)
        prefixes, indices, losses = [], [], []
        for vq in self.stages[:n]:
            q, idx, loss = vq(residual)
            total = total + q.detach()
            residual = residual - q.detach()  # r_i = y − Σ_{j<i} ŷ_j; commitment pulls y
            # one straight-through estimator on the prefix sum: ∂ŷ_{≤i}/∂y = I for every i
            prefixes.append(total + (y - y.detach()))
            indices.append(idx)
            losses.append(loss)
        return prefixes, torch.stack(indices, 1), losses

    def decode(self, indices: Tensor) -> Tensor:
        """(B, k, H, W) indices of the first k stages → ŷ_{≤k}."""
        return sum(vq.embed(indices[:, i]) for i, vq in enumerate(self.stages[: indices.shape[1]]))


