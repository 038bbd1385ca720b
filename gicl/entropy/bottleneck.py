"""HyperVQ's hyper-latent bottleneck: CompressAI's factorized `EntropyBottleneck` with integer
tables whose least probability is a known floor, and the float rate those tables realise.

CompressAI turns a channel's pmf into a 16-bit quantised CDF (`pmf_to_quantized_cdf`) by
rounding, then gives every symbol that rounded to zero one count *stolen from the rarest
symbols that have more than one*. A table over wide tails (a hyperprior's bottleneck is
hundreds of symbols wide, most of them far below 2⁻¹⁶) thus flattens its moderately rare
symbols to the floor: on the HVQ-ProGIC demo a hyper-latent of float probability 2⁻¹¹·⁹ was
coded at 16 bits, and one stage's stream cost 2.3 % more than its float rate (kodim17). Here
every symbol gets one count and the rest is shared in proportion to the pmf (largest
remainders), so a table gives each value `(1 − n·2⁻¹⁶)·p + 2⁻¹⁶` up to rounding: the mixture
the float rate (`hyper_bits`) can state exactly, as the index coder's tables do
(`gicl.entropy.hypervq.index_bits`). The range coder, the CDF layout and the escape code
are CompressAI's, unchanged.
"""

from __future__ import annotations

import math

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor

from gicl.entropy.rans_bits import CDF_PRECISION, bypass_bits, rans_table_bits

STALE_TAIL_LOGITS = 1.0  # tails farther than this (CDF logits) from their target are refitted


def with_coder_floor(log_p: Tensor, floor: float, symbols: Tensor | float) -> Tensor:
    """ln p as integer tables realise it, ln((1 − symbols·floor)·p + floor), where every one of
    `symbols` table entries holds at least `floor` and the rest is shared in proportion to p.
    The gradient stays that of ln p, as CompressAI's likelihood bound lets through gradients
    that raise a likelihood: the floor's own gradient vanishes below it, and a model whose
    values start there would never learn."""
    shrink = torch.log1p(-torch.as_tensor(symbols, dtype=log_p.dtype, device=log_p.device) * floor)
    floored = torch.logaddexp(log_p.detach() + shrink, torch.full_like(log_p, math.log(floor)))
    return log_p + (floored - log_p.detach())


def floored_quantized_cdf(prob: Tensor, lengths: Tensor, precision: int = CDF_PRECISION) -> Tensor:
    """(C, L + 1) int32 CDFs from per-channel probabilities (C, L), of which the first
    `lengths[c]` count: each symbol one count of 2^precision, the remaining counts in
    proportion to prob, rounded down, and the counts rounding leaves over to the symbols
    with the largest remainders (ties: the lower symbol). Computed in float64 from the
    given probabilities, so it is a deterministic function of them."""
    total_count = 1 << precision
    valid = torch.arange(prob.shape[1], device=prob.device)[None] < lengths[:, None]
    p = torch.where(valid, prob.double().clamp_min(0.0), 0.0)
    spare = (total_count - lengths).double()[:, None]
    scaled = p / p.sum(1, keepdim=True) * spare
    counts = torch.where(valid, scaled.floor() + 1, 0.0)
    left = total_count - counts.sum(1, keepdim=True)
    remainder = torch.where(valid, scaled - scaled.floor(), -1.0)
    order = torch.sort(remainder, dim=1, descending=True, stable=True).indices
    positions = torch.arange(prob.shape[1], device=prob.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    counts = counts + (rank < left).double()
    cdf = torch.cat([torch.zeros_like(counts[:, :1]), counts.cumsum(1)], 1)
    return torch.where(torch.cat([torch.ones_like(valid[:, :1]), valid], 1), cdf, 0.0).to(torch.int32)


class FlooredBottleneck(EntropyBottleneck):
    """CompressAI's `EntropyBottleneck` (same parameters, state dict and rANS streams) whose
    `update()` builds its tables over tails refitted where they are stale (`table_quantiles`)
    with `floored_quantized_cdf` instead of CompressAI's steal-from-the-rarest rounding
    (module docstring)."""

    def _pmf_to_cdf(self, pmf: Tensor, tail_mass: Tensor, pmf_length: Tensor, max_length: int) -> Tensor:
        """The table layout CompressAI's coder reads: pmf_length[c] symbols, then the overflow
        symbol with the tail mass, padded to max_length + 2 CDF entries."""
        prob = torch.cat([pmf, torch.zeros_like(pmf[:, :1])], 1)
        prob[torch.arange(len(prob)), pmf_length.long()] = tail_mass[:, 0]
        return floored_quantized_cdf(prob, pmf_length.long() + 1, self.entropy_coder_precision)

    def update(self, force: bool = False, update_quantiles: bool = False) -> bool:
        """CompressAI's `update` over `table_quantiles`; whether the tables were (re)built.

        The tails (quantiles 0 and 2) are the range of the integer CDF tables: a hyper-latent
        beyond them is coded by escape bits, far above its float −log₂ likelihood. The aux
        loss moves them by its learning rate per step, too slowly for short runs (the
        HVQ-VQGAN demo's 300 steps left them at ±10 where the density reaches ±190: tables
        17 % over the float R_z on kodim20; 0.05 % after the refit). The quantiles parameter
        is restored afterwards: a model file stores the trained weights (an EMA export its
        averages), and loading it refits the same tails from them. `update_quantiles` is
        CompressAI's option to keep the refitted quantiles."""
        if self._offset.numel() > 0 and not force:  # built already: as CompressAI's update
            return False
        trained = self.quantiles.detach().clone()
        with torch.no_grad():
            self.quantiles.copy_(table_quantiles(self))
            try:
                return super().update(force=True)
            finally:
                if not update_quantiles:
                    self.quantiles.copy_(trained)


def table_quantiles(bottleneck: EntropyBottleneck) -> Tensor:
    """(C, 1, 3): the tails and medians `FlooredBottleneck.update` builds the integer tables
    over: the trained quantiles, or, where the aux loss has left a tail more than
    `STALE_TAIL_LOGITS` from its target, tails placed by CompressAI's bisection where the
    density leaves `tail_mass`/2 on each side (the medians kept: they set the rounding
    offsets, so ŷ, μ, σ and the model's rate do not move). The parameter is not changed."""
    with torch.no_grad():
        trained = bottleneck.quantiles.detach().clone()
        tails = trained[:, :, 0::2]
        residual = bottleneck._logits_cumulative(tails, stop_gradient=True) - bottleneck.target[0::2]
        if not bool(residual.abs().max() > STALE_TAIL_LOGITS):
            return trained
        try:
            bottleneck._update_quantiles()
            refitted = bottleneck.quantiles.detach().clone()
        finally:
            bottleneck.quantiles.copy_(trained)
        refitted[:, 0, 1] = trained[:, 0, 1]
        return refitted


def table_range(bottleneck: EntropyBottleneck) -> tuple[Tensor, Tensor]:
    """(below, above), (1, C, 1, 1) float64: how many values each channel's table holds below
    and above its median — the tables `update()` last built (CompressAI's `_offset` and
    `_cdf_length`), or, before any, the ones it would build (`table_quantiles`, a bisection
    when the tails are stale: ≈ 14 ms for 72 channels here, where reading the built ones
    is free)."""
    if bottleneck._offset.numel() > 0:
        below = -bottleneck._offset.double()
        above = bottleneck._cdf_length.double() - 3 - below  # the table's length is below + above + 1
    else:
        lows, medians, highs = table_quantiles(bottleneck).double().unbind(-1)
        below, above = torch.ceil(medians - lows).clamp_min(0), torch.ceil(highs - medians).clamp_min(0)
    return below.view(1, -1, 1, 1), above.view(1, -1, 1, 1)


def hyper_bits(bottleneck: EntropyBottleneck, y_hat: Tensor, likelihoods: Tensor) -> Tensor:
    """−log₂ of what the bottleneck's integer tables (`FlooredBottleneck`) and CompressAI's
    escape code give each hyper-latent ŷ, (B, C, H, W); differentiable as −log₂ likelihood.

    A value the tables cover costs −log₂ of the table's mixture with its 2⁻¹⁶ floor
    (`with_coder_floor`), at most 16 bits where the float likelihood alone says up to 30 (the
    HVQ-ProGIC demo on kodim20: 1 797 hyper-latents of one stage at 25.5 bits on average in
    float, 16 in the file). A value beyond the tables' tails costs the overflow symbol and
    the bypass chunks of its distance (`gicl.entropy.rans_bits`), as the file does."""
    precision = bottleneck.entropy_coder_precision
    below, above = (t.to(y_hat.device) for t in table_range(bottleneck))
    symbols = below + above + 2  # the table's values and its overflow symbol
    medians = bottleneck.quantiles[:, 0, 1].detach().double().view(1, -1, 1, 1)
    value = torch.round(y_hat.detach().double() - medians) + below  # the symbol's place in its table
    escaped = (value < 0) | (value > below + above)
    raw = torch.where(value < 0, -2 * value - 1, 2 * (value - below - above - 1)).clamp_min(0).long()
    tail = torch.full_like(likelihoods, math.log(bottleneck.tail_mass))
    escape = -with_coder_floor(tail, 2.0**-precision, symbols) / math.log(2.0) + bypass_bits(raw)
    covered = -with_coder_floor(torch.log(likelihoods), 2.0**-precision, symbols) / math.log(2.0)
    return covered + torch.where(escaped, escape - covered.detach(), 0.0)


def bottleneck_table_bits(bottleneck: EntropyBottleneck, y: Tensor) -> float:
    """−log₂ of the integer CDF tables `bottleneck.compress(y)` codes y's symbols with (its
    rANS string's ideal length; `gicl.entropy.rans_bits`)."""
    medians = bottleneck._get_medians().detach().reshape(1, -1, *[1] * (y.dim() - 2))
    symbols = bottleneck.quantize(y, "symbols", medians.expand_as(y))
    indexes = bottleneck._build_indexes(y.size())
    return rans_table_bits(
        symbols.reshape(-1).cpu().numpy(), indexes.reshape(-1).cpu().numpy(),
        bottleneck._quantized_cdf.tolist(), bottleneck._cdf_length.reshape(-1).tolist(),
        bottleneck._offset.reshape(-1).tolist(),
    )
