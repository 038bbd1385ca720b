"""Static Huffman and static-table range coding (Control-GIC's index entropy coding)."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from gicl.entropy.huffman import MAX_CODE_LENGTH, HuffmanCode, huffman_lengths
from gicl.entropy.static_range import PRECISION, StaticRangeCoder, integer_frequencies
from gicl.errors import BitstreamError


def skewed_counts(k: int = 1024, seed: int = 0) -> np.ndarray:
    """Zipf-like counts with some zeros, like a codebook's usage table."""
    rng = np.random.default_rng(seed)
    counts = (1e6 / np.arange(1, k + 1) ** 1.3).astype(np.int64)
    counts[rng.choice(k, k // 20, replace=False)] = 0
    return rng.permutation(counts)


def sample(counts: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    p = np.maximum(counts, 1) / np.maximum(counts, 1).sum()
    return np.random.default_rng(seed).choice(len(counts), n, p=p)


def reference_cost(freq: np.ndarray) -> int:
    """Σ f·len of an optimal prefix code: the sum of all merge weights (textbook Huffman)."""
    heap = [int(f) for f in freq]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def test_huffman_lengths_are_optimal_complete_and_cover_zero_counts():
    counts = skewed_counts()
    lengths = huffman_lengths(counts)
    freq = np.maximum(counts, 1)
    assert (lengths >= 1).all() and lengths.max() <= MAX_CODE_LENGTH
    assert (lengths[counts == 0] > 0).all()  # every symbol can be coded
    assert sum(2.0 ** -int(n) for n in lengths) == 1.0  # a complete prefix code (Kraft)
    assert int((freq * lengths).sum()) == reference_cost(freq)  # optimal
    p = freq / freq.sum()
    entropy = float(-(p * np.log2(p)).sum())
    mean = float((p * lengths).sum())
    assert entropy <= mean < entropy + 1
    assert np.array_equal(lengths, huffman_lengths(counts.copy()))  # a function of the table


def test_canonical_codes_are_prefix_free_and_ordered():
    code = HuffmanCode.from_counts(skewed_counts(64, seed=3))
    words = {format(int(c), f"0{int(n)}b") for c, n in zip(code.codes, code.lengths, strict=True)}
    assert len(words) == 64
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    order = np.lexsort((np.arange(64), code.lengths))
    left = [int(code.codes[s]) << (code.max_length - int(code.lengths[s])) for s in order]
    assert left == sorted(left) and left[0] == 0


def test_huffman_round_trip_bit_exact_on_a_skewed_table():
    counts = skewed_counts()
    code = HuffmanCode.from_counts(counts)
    symbols = np.concatenate([sample(counts, 50_000), np.flatnonzero(counts == 0)])
    data = code.encode(symbols)
    bits = int(code.lengths[symbols].sum())
    assert code.bits(symbols) == bits and len(data) == (bits + 7) // 8
    assert np.array_equal(code.decode(data, len(symbols)), symbols)
    # uniform table over 1024 symbols: exactly 10 bits each
    uniform = HuffmanCode.from_counts(np.ones(1024, dtype=np.int64))
    assert (uniform.lengths == 10).all()
    assert np.array_equal(uniform.decode(uniform.encode(symbols), len(symbols)), symbols)
    assert code.encode(np.zeros(0, dtype=np.int64)) == b""


def test_huffman_handles_tables_whose_codes_would_exceed_the_cap():
    fib = [1, 1]
    while len(fib) < 80:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib, dtype=np.int64)  # Fibonacci counts: optimal depth 79 > cap
    code = HuffmanCode.from_counts(counts)
    assert code.max_length <= MAX_CODE_LENGTH
    assert sum(2.0 ** -int(n) for n in code.lengths) == 1.0
    symbols = np.arange(80).repeat(3)
    assert np.array_equal(code.decode(code.encode(symbols), len(symbols)), symbols)


def test_huffman_decode_rejects_truncated_and_padded_sections():
    counts = skewed_counts(256)
    code = HuffmanCode.from_counts(counts)
    symbols = sample(counts, 2000)
    data = code.encode(symbols)
    with pytest.raises(BitstreamError):
        code.decode(data[: len(data) // 2], len(symbols))
    with pytest.raises(BitstreamError):
        code.decode(data + b"\x00\x00", len(symbols))


def test_integer_frequencies_rule():
    counts = skewed_counts()
    f = integer_frequencies(counts)
    assert f.sum() == 1 << PRECISION and f.min() >= 1
    big = counts * 10**9  # products with 2^24 overflow int64: the rule must stay exact
    assert np.array_equal(integer_frequencies(big), f)


def test_range_coder_round_trip_and_beats_huffman_on_a_skewed_table():
    counts = np.array([1000, 30, 20, 10, 5, 1, 1, 1], dtype=np.int64)
    symbols = sample(counts, 20_000)
    rc = StaticRangeCoder(counts)
    data = rc.encode(symbols)
    assert np.array_equal(rc.decode(data, len(symbols)), symbols)
    huff = HuffmanCode.from_counts(counts)
    p = counts / counts.sum()
    entropy_bits = float(-(np.log2(p[symbols])).sum())
    # Huffman pays ≥ 1 bit per symbol; the range coder stays near the entropy (≈ 0.45 bit)
    assert 8 * len(data) < 0.6 * huff.bits(symbols)
    assert 8 * len(data) <= 1.01 * entropy_bits + 64
    assert abs(rc.bits(symbols) - 8 * len(data)) <= 64
    with pytest.raises(BitstreamError):
        rc.decode(data[:-1], len(symbols))


def test_range_coder_on_the_codebook_table():
    counts = skewed_counts()
    symbols = sample(counts, 30_000, seed=7)
    rc = StaticRangeCoder(counts)
    data = rc.encode(symbols)
    assert np.array_equal(rc.decode(data, len(symbols)), symbols)
    assert 8 * len(data) < HuffmanCode.from_counts(counts).bits(symbols)
    assert rc.encode(np.zeros(0, dtype=np.int64)) == b""
    assert len(rc.decode(b"", 0)) == 0
