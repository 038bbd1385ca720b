"""−log₂ of CompressAI's integer rANS tables for given symbols: what a section should cost.

CompressAI's `RansEncoder.encode_with_indexes` (used by its EntropyBottleneck and
GaussianConditional, and by GLC's ŷ) codes symbol s with table i as value v = s − offset[i]
under the 16-bit quantised CDF i; a value outside [0, length[i] − 2) is escaped: the table's
last symbol, then the raw value (2|v| − 1 below, 2(v − max) above) in 4-bit bypass chunks,
preceded by their count in 4-bit chunks (15 meaning "15 and more"). The ideal length of a
section is the sum of those costs; its payload exceeds it by the coder's flush (a 32-bit
state) and rounding to bytes, which is what the "within 0.5 % + 8 bytes per section" checks
measure. Reimplemented here because CompressAI exposes the coder, not its cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

IntArray = TypeVar("IntArray")  # numpy or torch integer arrays alike

CDF_PRECISION = 16  # CompressAI's rANS precision
BYPASS_BITS = 4  # CompressAI's escape-code chunk


def rans_table_bits(symbols: np.ndarray, indexes: np.ndarray, cdfs: Sequence[Sequence[int]],
                    lengths: Sequence[int], offsets: Sequence[int]) -> float:
    """Ideal bits of `encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)`."""
    if symbols.size == 0:
        return 0.0
    cdf = np.zeros((len(cdfs), max(lengths)), dtype=np.int64)
    for i, row in enumerate(cdfs):
        cdf[i, : len(row)] = row
    lengths_a, offsets_a = np.asarray(lengths), np.asarray(offsets)
    value = symbols.astype(np.int64) - offsets_a[indexes]
    max_value = lengths_a[indexes] - 2
    raw = np.where(value < 0, -2 * value - 1, 2 * (value - max_value))
    escaped = (value < 0) | (value >= max_value)
    value = np.where(escaped, max_value, value)
    freq = cdf[indexes, value + 1] - cdf[indexes, value]
    bits = float(np.sum(CDF_PRECISION - np.log2(freq)))
    return bits + float(np.sum(bypass_bits(raw[escaped])))


def bypass_bits(raw: IntArray) -> IntArray:
    """Bits of CompressAI's escape code for each raw value ≥ 0: a 4-bit chunk count (15 meaning
    "15 and more", then another count), and the value's 4-bit chunks."""
    n_bypass = raw * 0
    for chunk in range(64 // BYPASS_BITS):  # a fixed count: no data-dependent loop (no GPU sync)
        n_bypass += (raw >> (BYPASS_BITS * chunk)) != 0
    bypass_max = (1 << BYPASS_BITS) - 1
    return BYPASS_BITS * (n_bypass // bypass_max + 1 + n_bypass)
