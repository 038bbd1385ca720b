"""Static-table range coding of i.i.d. symbols with constriction (24-bit).

The option that gets closer to the entropy of a static frequency table than Huffman, which
spends at least one bit per symbol and rounds every probability to a power of two.
constriction's `Categorical` model works at 24-bit precision; encoder and decoder must feed
it the *same* floats, so the table is first turned into integer frequencies that sum to
2²⁴ by one deterministic integer rule (`integer_frequencies`), and the model is built from
those with `perfect=False` on both sides: the decoder on another machine then rebuilds
exactly the encoder's model, so coding is bit-exact.
"""

from __future__ import annotations

import constriction
import numpy as np
from numpy.typing import NDArray

from gicl.errors import BitstreamError

PRECISION = 24


def integer_frequencies(counts: NDArray[np.int64], precision: int = PRECISION) -> NDArray[np.int64]:
    """Frequencies summing to 2**precision with every symbol ≥ 1.

    `f = ⌊p·(2^P − K)⌋ + 1` with p = count / total, computed in exact integer arithmetic
    (Python ints: counts can exceed what int64 holds once multiplied), and the remainder
    goes to the first most frequent symbol (the integer-CDF rule of HyperVQ's appendix B).
    """
    c = [max(int(v), 0) for v in np.asarray(counts).reshape(-1)]
    k, total = len(c), sum(c)
    scale = (1 << precision) - k
    if scale < 0:
        raise ValueError(f"{k} symbols do not fit {precision}-bit frequencies")
    f = [1 + (v * scale // total if total else 0) for v in c]
    f[int(np.argmax(c))] += (1 << precision) - sum(f)
    return np.asarray(f, dtype=np.int64)


class StaticRangeCoder:
    """Range coder over a fixed table (identical on both sides by construction)."""

    def __init__(self, counts: NDArray[np.int64]) -> None:
        self.frequencies = integer_frequencies(counts)
        # f / 2^24 is exact in float64, so both sides hand constriction identical inputs
        probs = self.frequencies.astype(np.float64) / float(1 << PRECISION)
        self.model = constriction.stream.model.Categorical(probs, perfect=False)
        self.information = PRECISION - np.log2(self.frequencies.astype(np.float64))

    def bits(self, symbols: NDArray[np.int64]) -> float:
        """Ideal code length (−log₂ of the integer table's probabilities); the real payload
        is this rounded up to whole 32-bit words, plus at most one word of flush."""
        return float(self.information[np.asarray(symbols, dtype=np.int64)].sum())

    def encode(self, symbols: NDArray[np.int64]) -> bytes:
        s = np.asarray(symbols, dtype=np.int64).reshape(-1)
        if s.size == 0:
            return b""
        if s.min() < 0 or s.max() >= len(self.frequencies):
            raise ValueError(f"symbols out of range for a {len(self.frequencies)}-symbol table")
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(s.astype(np.int32), self.model)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, count: int) -> NDArray[np.int64]:
        if count == 0 and not data:
            return np.zeros(0, dtype=np.int64)
        if len(data) % 4 or not data:
            raise BitstreamError("a range-coded section is not whole 32-bit words: file truncated")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            out = constriction.stream.queue.RangeDecoder(words).decode(self.model, count)
        except Exception as e:  # constriction reports corrupt input with its own exceptions
            raise BitstreamError(f"a range-coded section cannot be decoded ({e})") from e
        out = np.asarray(out, dtype=np.int64)
        if self.encode(out) != data:  # the decoder stops reading early: trailing words pass it
            raise BitstreamError("a range-coded section is not what the encoder writes for its "
                                 "symbols (trailing or altered words): the file is corrupted")
        return out
