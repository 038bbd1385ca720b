"""Exact range coding of VQ indices under HyperVQ's per-location Gaussian-anchor model.

HyperVQ (Niu et al., arXiv:2512.07192, eq. 3) gives every location a categorical
distribution over the K codewords, `p_k ∝ exp(−‖c_k − μ‖² / 2σ²)`. Coding with it needs the
encoder and the decoder to build *the same integer frequency table* at every location,
although μ and σ come out of float convolutions whose last bits differ across thread counts,
CPUs and GPUs. This module makes the table a deterministic function of integers:

0. μ and σ come from the hyper-synthesis run in float64 (`HyperVQ.compress`), so machines
   disagree on them by ~10⁻¹⁵, not the ~10⁻⁶ of float32.
1. **Snap** (`SnapGrid.snap`): μ to a fixed step and σ to a log-spaced scale table (as
   CompressAI's GaussianConditional does for scales). Only the integer grid indices go on.
   A float discrepancy changes a table only when it moves a value across a grid boundary;
   `SnapGrid.margins` measures how close each location is to one.
   The grid follows the codebook's scale, so one rule serves a Control-GIC codebook and a
   late ProGIC residual stage whose codewords are 100× smaller: `unit` is the power of two
   just below the largest per-coordinate range of the codebook (exact: `math.frexp`);
   μ step = unit/1024; σ levels unit·2^(j/16) for 2⁻⁸ ≤ σ/unit ≤ 2² (161 levels, 4.4 %
   apart).
2. **Logit gaps** from exact integers: codewords are rounded to the μ grid too, so the
   squared distances `d²_k` (in steps²) are integers below 2⁵³ — exact in float64 whatever
   order a BLAS or a GPU sums them in — and one correctly rounded multiplication gives
   `Δ_k = (d²_k − min d²)·step²/(2σ̂²)`; then `q_k = ⌊64·Δ_k⌋` (1/64-nat steps). Every
   machine gets the same bits.
3. **Weights** `w_k = EXP[q_k]`, a table of `round(2³²·e^(−q/64))` computed once with
   Python's `decimal` (software arithmetic, identical everywhere), so no libm `exp` is on
   the path. The table reaches 0 at 22.9 nats: farther anchors get only the floor.
4. **Frequencies** in int64: `f_k = ⌊w_k·(2²⁴ − K)/Σw⌋ + 1`, the remainder to the nearest
   anchor (appendix B's monotone rule, every symbol ≥ 1, sum exactly 2²⁴).
5. **Bounded tail-floor** (appendix B.3), for codebooks above `TAIL_THRESHOLD`: anchors
   more than `tail_radius` nats from the best one get weight 0, i.e. frequency exactly 1.

constriction's range coder (24-bit, `perfect=False` on both sides) receives `f − 1` as
unnormalised float64 "probabilities": integers below 2⁵³ sum exactly to 2²⁴ − K, so its
fast quantiser (`⌊cumsum·(2²⁴−K)/total⌋ + k`) reproduces `f` exactly — the table it codes
with is the one `information_bits` measures.
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from torch import Tensor

from gicl.errors import BitstreamError

PRECISION = 24
MU_STEPS_PER_UNIT = 1024
SIGMA_LOG2_RANGE = (-8, 2)  # σ/unit from 2^-8 to 2^2
SIGMA_LEVELS_PER_OCTAVE = 16
LOGIT_STEPS_PER_NAT = 64
WEIGHT_BITS = 32
TAIL_THRESHOLD = 4096  # codebooks larger than this use the bounded tail-floor
TAIL_RADIUS = 10.0  # nats: pruned anchors each had < e^-10 ≈ 4.5e-5 of the best one's mass
MU_CLAMP_UNITS = 4  # μ beyond the codebook box by more than this is clamped
CHUNK_ELEMENTS = 1 << 20  # rows × K per chunk: bounds memory at K = 16384 and beyond


def _decimal_context() -> decimal.Context:
    return decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


@functools.lru_cache(maxsize=1)
def exp_weights() -> tuple[int, ...]:
    """round(2^32 · e^(−q/64)) for q = 0, 1, … up to and including the first 0."""
    ctx = _decimal_context()
    scale = decimal.Decimal(1 << WEIGHT_BITS)
    out: list[int] = []
    q = 0
    while not out or out[-1] != 0:
        v = ctx.exp(ctx.divide(decimal.Decimal(-q), decimal.Decimal(LOGIT_STEPS_PER_NAT)))
        out.append(int(ctx.multiply(v, scale).to_integral_value(decimal.ROUND_HALF_EVEN)))
        q += 1
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _fractional_octaves() -> tuple[float, ...]:
    """2^(r/32) for r = 0..31 (σ levels and their midpoints), correctly rounded via decimal."""
    ctx = _decimal_context()
    ln2 = ctx.ln(decimal.Decimal(2))
    return tuple(float(ctx.exp(ctx.divide(ctx.multiply(ln2, decimal.Decimal(r)), decimal.Decimal(32))))
                 for r in range(32))


def _pow2_32nds(r: int) -> float:
    """2^(r/32) for any integer r, exactly as `_fractional_octaves` times a power of two."""
    whole, frac = divmod(r, 32)
    return math.ldexp(_fractional_octaves()[frac], whole)


@dataclass(frozen=True)
class SnapGrid:
    """The μ step and σ table of one codebook (see the module docstring, step 1)."""

    unit: float  # a power of two

    @classmethod
    def for_codebook(cls, codebook: Tensor) -> SnapGrid:
        c = codebook.detach().to("cpu", torch.float64)
        spread = float((c.max(0).values - c.min(0).values).max()) if c.numel() else 0.0
        if not math.isfinite(spread) or spread <= 0.0:
            return cls(unit=1.0)
        _, exponent = math.frexp(spread)  # spread = m·2^e, 0.5 ≤ m < 1
        return cls(unit=math.ldexp(1.0, exponent - 1))

    @property
    def mu_step(self) -> float:
        return self.unit / MU_STEPS_PER_UNIT

    @property
    def levels(self) -> int:
        lo, hi = SIGMA_LOG2_RANGE
        return (hi - lo) * SIGMA_LEVELS_PER_OCTAVE + 1

    @property
    def sigma_min(self) -> float:
        return self.sigma(0)

    @property
    def sigma_max(self) -> float:
        return self.sigma(self.levels - 1)

    def sigma(self, j: int) -> float:
        """Level j: unit·2^(lo + j/16)."""
        return self.unit * _pow2_32nds(32 * SIGMA_LOG2_RANGE[0] + 2 * j)

    def sigma_bounds(self) -> Tensor:
        """Geometric midpoints between consecutive levels (float64, length levels − 1)."""
        return torch.tensor(
            [self.unit * _pow2_32nds(32 * SIGMA_LOG2_RANGE[0] + 2 * j + 1) for j in range(self.levels - 1)],
            dtype=torch.float64,
        )

    def inverse_two_variance(self) -> Tensor:
        """1/(2σ̂_j²) per level, float64: unit⁻²·2^(−2lo − 1 − j/8), exact powers of two
        times the decimal-rounded fractional octaves."""
        lo = SIGMA_LOG2_RANGE[0]
        return torch.tensor(
            [_pow2_32nds(-64 * lo - 32 - 4 * j) / (self.unit * self.unit) for j in range(self.levels)],
            dtype=torch.float64,
        )

    def snap(self, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(N, d) μ and (N,) σ → integer μ indices (N, d) and σ level indices (N,).

        Dividing by the power-of-two step is exact; rounding is half-to-even; σ is placed by
        comparisons against fixed float64 midpoints (no logarithm on the path).
        """
        m = torch.round(mu.detach().to(torch.float64) / self.mu_step).clamp(-(2.0**40), 2.0**40)
        s = sigma.detach().to(torch.float64).contiguous()
        j = torch.searchsorted(self.sigma_bounds().to(s.device), s)
        return m.to(torch.int64), j.to(torch.int64)

    def margins(self, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Distance of each location to its nearest snapping boundary: for μ (absolute, the
        minimum over the d coordinates) and for σ (relative, in log₂ units), shape (N,).
        A float discrepancy smaller than the margin cannot change the location's table."""
        x = mu.detach().to(torch.float64) / self.mu_step
        mu_margin = ((x - torch.floor(x) - 0.5).abs().min(1).values) * self.mu_step
        b = torch.log2(self.sigma_bounds().to(sigma.device))
        ls = torch.log2(sigma.detach().to(torch.float64))
        sigma_margin = (ls[:, None] - b[None, :]).abs().min(1).values
        return mu_margin, sigma_margin


@dataclass
class AnchorTables:
    """What `integer_frequencies` needs besides μ and σ, prepared once per codebook.

    Codewords are rounded to the μ grid (`a`, integers in float64); the squared distance
    `d² = ‖m‖² + ‖a‖² − 2 m·aᵀ` is then one GEMM of augmented rows `[m, 1, ‖m‖²]·[−2a, ‖a‖², 1]ᵀ`
    whose products and partial sums are integers below 2^53: exact in float64 in whatever
    order a BLAS or a GPU sums them. μ is clamped to the codebook's box widened by
    `MU_CLAMP_UNITS` units, which keeps that bound.
    """

    augmented: Tensor  # (d + 2, K) float64
    low: Tensor  # (d,) μ-index clamp bounds
    high: Tensor
    per_level: Tensor  # (levels,) step²·64/(2σ̂_j²), float64
    weights: Tensor  # (Q,) int64, EXP with the tail cut applied
    last: int  # the index of the first zero weight

    @classmethod
    def build(
        cls, codebook: Tensor, grid: SnapGrid, tail_radius: float | None, device: torch.device
    ) -> AnchorTables:
        a = torch.round(codebook.detach().to(device, torch.float64) / grid.mu_step)
        k, d = a.shape
        if k + 1 > (1 << PRECISION):
            raise ValueError(f"{k} codewords do not fit {PRECISION}-bit frequencies")
        margin = MU_CLAMP_UNITS * MU_STEPS_PER_UNIT
        if d * (float(a.abs().max()) + margin) ** 2 >= 2.0**51:
            raise ValueError("codeword coordinates are too large for exact integer distances")
        ones = torch.ones(k, 1, dtype=torch.float64, device=device)
        augmented = torch.cat([-2.0 * a, (a * a).sum(1, keepdim=True), ones], 1).t().contiguous()
        weights = torch.tensor(exp_weights(), dtype=torch.int64, device=device)
        last = len(weights) - 1  # weight 0
        if tail_radius is not None:
            last = min(last, int(tail_radius * LOGIT_STEPS_PER_NAT))
            weights[last] = 0
        # a power of two times the σ table: exact; one rounding per location below
        step2 = grid.mu_step * grid.mu_step * LOGIT_STEPS_PER_NAT
        per_level = grid.inverse_two_variance().to(device) * step2
        return cls(augmented, a.min(0).values - margin, a.max(0).values + margin, per_level, weights, last)


def _frequencies(mu_idx: Tensor, sigma_idx: Tensor, t: AnchorTables) -> Tensor:
    k = t.augmented.shape[1]
    m = mu_idx.to(t.augmented.device, torch.float64).clamp(t.low, t.high)
    ones = torch.ones(len(m), 1, dtype=torch.float64, device=m.device)
    d2 = torch.cat([m, ones, (m * m).sum(1, keepdim=True)], 1) @ t.augmented
    best, nearest = d2.min(1, keepdim=True)  # the first nearest anchor on ties
    q = d2.sub_(best).mul_(t.per_level[sigma_idx.to(m.device)][:, None])
    q = q.clamp_(max=float(t.last)).floor_().to(torch.int64)
    w = t.weights[q]
    total = w.sum(1, keepdim=True)
    f = w.mul_((1 << PRECISION) - k).floor_divide_(total).add_(1)
    f.scatter_add_(1, nearest, (1 << PRECISION) - f.sum(1, keepdim=True))
    return f


def integer_frequencies(
    mu_idx: Tensor, sigma_idx: Tensor, codebook: Tensor, grid: SnapGrid, *, tail_radius: float | None = None
) -> Tensor:
    """Frequencies (N, K) int64, each ≥ 1, rows summing to 2^24, from snapped parameters.

    The one deterministic function both coder sides call (module docstring, steps 2–5;
    exact distances: `AnchorTables`). `tail_radius` (nats) floors every anchor farther than
    that from the nearest one. Runs on the device of its inputs; `frequency_chunks` bounds
    the memory.
    """
    return _frequencies(mu_idx, sigma_idx, AnchorTables.build(codebook, grid, tail_radius, mu_idx.device))


def frequency_chunks(
    mu_idx: Tensor, sigma_idx: Tensor, codebook: Tensor, grid: SnapGrid, *, tail_radius: float | None = None
) -> Iterator[Tensor]:
    """`integer_frequencies` over row chunks of ≈ 2^20 table entries each."""
    tables = AnchorTables.build(codebook, grid, tail_radius, mu_idx.device)
    rows = max(1, CHUNK_ELEMENTS // max(1, codebook.shape[0]))
    for start in range(0, mu_idx.shape[0], rows):
        yield _frequencies(mu_idx[start : start + rows], sigma_idx[start : start + rows], tables)


def tail_radius_for(k: int) -> float | None:
    """The bounded tail-floor is on above `TAIL_THRESHOLD` codewords (appendix B.3)."""
    return TAIL_RADIUS if k > TAIL_THRESHOLD else None


def _family() -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(perfect=False)


def _as_probabilities(f: Tensor) -> np.ndarray:
    """f − 1 as float64: constriction's fast quantiser then reproduces f exactly."""
    return (f - 1).to("cpu", torch.float64).numpy()


@dataclass
class CodedIndices:
    data: bytes
    information_bits: float  # Σ −log₂(f_t / 2^24) of the tables actually used


def encode_indices(
    symbols: Tensor, mu_idx: Tensor, sigma_idx: Tensor, codebook: Tensor, grid: SnapGrid
) -> CodedIndices:
    """Range-code symbols (N,) with per-location tables; batched over locations."""
    s = symbols.detach().to(torch.int64).reshape(-1)
    if s.numel() == 0:
        return CodedIndices(b"", 0.0)
    k = codebook.shape[0]
    if int(s.min()) < 0 or int(s.max()) >= k:
        raise ValueError(f"indices out of range for a {k}-entry codebook")
    encoder = constriction.stream.queue.RangeEncoder()
    info, start = 0.0, 0
    for f in frequency_chunks(mu_idx, sigma_idx, codebook, grid, tail_radius=tail_radius_for(k)):
        part = s[start : start + len(f)].to(f.device)
        chosen = f.gather(1, part[:, None])[:, 0].to("cpu", torch.float64)
        info += float((PRECISION - torch.log2(chosen)).sum())
        encoder.encode(part.to("cpu", torch.int32).numpy(), _family(), _as_probabilities(f))
        start += len(f)
    return CodedIndices(encoder.get_compressed().astype("<u4").tobytes(), info)


def decode_indices(
    data: bytes, mu_idx: Tensor, sigma_idx: Tensor, codebook: Tensor, grid: SnapGrid
) -> Tensor:
    """Inverse of `encode_indices`: the decoder rebuilds the same integer tables."""
    n = mu_idx.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    if len(data) % 4 or not data:
        raise BitstreamError("a HyperVQ index section is not whole 32-bit words: file truncated")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    # The range decoder stops reading once it has its symbols, so trailing or altered words
    # after them would pass: the symbols are re-encoded with the same tables (while each
    # chunk's table is at hand; the tables, not the coder, are the cost) and must give `data`.
    again = constriction.stream.queue.RangeEncoder()
    out = []
    radius = tail_radius_for(codebook.shape[0])
    try:
        for f in frequency_chunks(mu_idx, sigma_idx, codebook, grid, tail_radius=radius):
            probabilities = _as_probabilities(f)
            out.append(np.asarray(decoder.decode(_family(), probabilities), dtype=np.int32))
            again.encode(out[-1], _family(), probabilities)
    except Exception as e:  # constriction reports corrupt input with its own exceptions
        raise BitstreamError(f"a HyperVQ index section cannot be decoded ({e})") from e
    if again.get_compressed().astype("<u4").tobytes() != data:
        raise BitstreamError("a HyperVQ index section is not what the encoder writes for its symbols "
                             "(trailing or altered words): the file is corrupted")
    return torch.from_numpy(np.concatenate(out).astype(np.int64))
