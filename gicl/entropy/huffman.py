"""Static canonical Huffman coding from a frequency table (Control-GIC §3.3).

Control-GIC codes its VQ indices with a Huffman code built once from index frequencies
counted over the training set; encoder and decoder rebuild the same code from the table in
the model file. Hand-written because no maintained library offers a *canonical* static
Huffman code with vectorised coding of int arrays, and the code must be a pure function of
the table so that two machines agree bit for bit:

- every symbol gets a code: zero counts are raised to 1 before building;
- ties in the Huffman merge are broken by the smallest symbol in each subtree, so the code
  lengths do not depend on heap implementation details;
- codes are canonical (ordered by (length, symbol)), so the lengths alone define them;
- lengths are capped at `MAX_CODE_LENGTH` = 56 bits (the decoder reads 64-bit windows at any
  bit offset). Reaching the cap needs a table with a Fibonacci-like spread of ≈ 10¹¹ between
  counts; if it happens, counts are halved (kept ≥ 1) until it does not, a deterministic
  rescaling that only touches such tables.

`HuffmanCode.from_counts_official` builds instead the exact tree of Control-GIC's released
coder (`CGIC/tools/indices_coding.py`, commit e1c3afe, after bhrigu123/huffman-coding): nodes
pushed in the order of the released model's `embedding_counter` ParameterDict, whose keys
`nn.ParameterDict` sorts as strings ('0', '1', '10', '100', '1000', '1001', …), onto a
`heapq` that compares frequencies only, two pops merged as (left, right) → code bits (0, 1),
counts used as they are (zeros included). Its tie
handling is the heap's, which only a literal replay reproduces, and its codes are the tree's
(not canonical). With it, index sections hold the authors' payload bits exactly; their `.bin`
files add a leading pad-count byte and pad with 1–8 zero bits, which gicl's container, that
length-prefixes every section and knows each symbol count, does not need.

Encoding and decoding are vectorised with numpy: the decoder evaluates the code at *every*
bit offset at once, then follows the chain of code starts by pointer doubling, so no
per-symbol Python loop runs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gicl.errors import BitstreamError

MAX_CODE_LENGTH = 56


def huffman_lengths(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Code length of every symbol of a Huffman code for `counts` (zeros raised to 1)."""
    freq = np.maximum(np.asarray(counts, dtype=np.int64), 1)
    while True:
        lengths = _lengths(freq)
        if lengths.max(initial=0) <= MAX_CODE_LENGTH:
            return lengths
        freq = np.maximum(freq // 2, 1)


def _lengths(freq: NDArray[np.int64]) -> NDArray[np.int64]:
    k = len(freq)
    if k == 1:
        return np.ones(1, dtype=np.int64)
    # heap items: (weight, smallest symbol in the subtree, node id); ids < k are leaves
    heap = [(int(f), s, s) for s, f in enumerate(freq)]
    heapq.heapify(heap)
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    next_id = k
    while len(heap) > 1:
        w1, s1, a = heapq.heappop(heap)
        w2, s2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (w1 + w2, min(s1, s2), next_id))
        next_id += 1
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for node in range(2 * k - 3, -1, -1):  # parents have larger ids: walk from the root down
        depth[node] = depth[parent[node]] + 1
    return depth[:k]


@dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code: `codes[s]` written MSB-first in `lengths[s]` bits."""

    lengths: NDArray[np.int64]
    codes: NDArray[np.uint64]

    @classmethod
    def from_counts(cls, counts: NDArray[np.int64]) -> HuffmanCode:
        return cls.from_lengths(huffman_lengths(counts))

    @classmethod
    def from_counts_official(cls, counts: NDArray[np.int64]) -> HuffmanCode:
        """The released Control-GIC coder's tree, replayed literally (module docstring)."""

        class Node:  # compares by frequency only, exactly as the released HeapNode
            def __init__(self, freq: int, symbol: int = -1, children: tuple = ()) -> None:
                self.freq, self.symbol, self.children = freq, symbol, children

            def __lt__(self, other: Node) -> bool:
                return self.freq < other.freq

        counts = np.asarray(counts)
        if len(counts) < 2:
            raise ValueError("a Huffman code needs at least two symbols")
        heap: list[Node] = []
        for s in sorted(range(len(counts)), key=str):
            heapq.heappush(heap, Node(int(counts[s]), s))
        while len(heap) > 1:
            left, right = heapq.heappop(heap), heapq.heappop(heap)
            heapq.heappush(heap, Node(left.freq + right.freq, children=(left, right)))
        lengths = np.zeros(len(counts), dtype=np.int64)
        codes = np.zeros(len(counts), dtype=np.uint64)
        stack = [(heap[0], 0, 0)]
        while stack:
            node, code, depth = stack.pop()
            if node.children:
                stack += [(child, (code << 1) | bit, depth + 1) for bit, child in enumerate(node.children)]
            else:
                lengths[node.symbol], codes[node.symbol] = depth, code
        if lengths.max() > MAX_CODE_LENGTH:
            raise ValueError(f"the frequency table gives codes longer than {MAX_CODE_LENGTH} bits")
        return cls(lengths=lengths, codes=codes)

    @classmethod
    def from_lengths(cls, lengths: NDArray[np.int64]) -> HuffmanCode:
        lengths = np.asarray(lengths, dtype=np.int64)
        order = np.lexsort((np.arange(len(lengths)), lengths))  # by length, then symbol
        codes = np.zeros(len(lengths), dtype=np.uint64)
        code, prev_len = 0, int(lengths[order[0]])
        for s in order:
            n = int(lengths[s])
            code <<= n - prev_len
            codes[s] = code
            code, prev_len = code + 1, n
        return cls(lengths=lengths, codes=codes)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max())

    def bits(self, symbols: NDArray[np.int64]) -> int:
        """Payload bits of `symbols` before byte padding."""
        return int(self.lengths[np.asarray(symbols, dtype=np.int64)].sum())

    def encode(self, symbols: NDArray[np.int64]) -> bytes:
        """Concatenate the codes of `symbols`, MSB first, zero-padded to a whole byte."""
        s = np.asarray(symbols, dtype=np.int64).reshape(-1)
        if s.size == 0:
            return b""
        if s.min() < 0 or s.max() >= len(self.lengths):
            raise ValueError(f"symbols out of range for a {len(self.lengths)}-symbol code")
        lens = self.lengths[s]
        ends = np.cumsum(lens)
        # bit j of a code (from its MSB) sits at stream position start + j
        which = np.repeat(np.arange(s.size), lens)
        j = np.arange(ends[-1]) - np.repeat(ends - lens, lens)
        shift = (lens[which] - 1 - j).astype(np.uint64)
        bits = (self.codes[s][which] >> shift) & np.uint64(1)
        return np.packbits(bits.astype(np.uint8)).tobytes()

    def decode(self, data: bytes, count: int) -> NDArray[np.int64]:
        """Inverse of `encode` for `count` symbols; BitstreamError if `data` cannot hold them."""
        if count == 0:
            if data:
                raise BitstreamError("an index section has trailing bytes: the file is corrupted")
            return np.zeros(0, dtype=np.int64)
        nbits = 8 * len(data)
        if nbits < count * int(self.lengths.min()):
            raise BitstreamError("an index section is shorter than its symbol count: file truncated")
        # 64-bit big-endian word starting at every byte, then the window at every bit offset
        buf = np.frombuffer(data + bytes(8), dtype=np.uint8).astype(np.uint64)
        words = np.zeros(len(data), dtype=np.uint64)
        for i in range(8):
            words |= buf[i : i + len(data)] << np.uint64(56 - 8 * i)
        pos = np.arange(nbits)
        window = (words[pos >> 3] << (pos & 7).astype(np.uint64)) >> np.uint64(64 - self.max_length)
        length, symbol = self._lookup(window)
        # successor of each code start; position nbits is an absorbing end (overrun marker)
        nxt = np.minimum(pos + length, nbits)
        nxt = np.append(nxt, nbits)
        # start of symbol i = nxt applied i times to 0: binary powers by pointer doubling
        starts = np.zeros(count, dtype=np.int64)
        steps = np.arange(count)
        jump = nxt
        while True:
            take = (steps & 1).astype(bool)
            starts[take] = jump[starts[take]]
            steps >>= 1
            if not steps.any():
                break
            jump = jump[jump]
        last = starts[-1]
        if last >= nbits or last + length[last] > nbits:
            raise BitstreamError("an index section ends inside a code: the file is truncated")
        if (last + length[last] + 7) // 8 != len(data):
            raise BitstreamError("an index section has trailing bytes: the file is corrupted")
        return symbol[starts]

    def _lookup(self, window: NDArray[np.uint64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Length and symbol of the code that begins each `max_length`-bit window."""
        m = self.max_length
        # in a complete prefix code the left-justified code values split the window range
        # into one interval per code: the code in a window is the last one whose value is
        # <= the window (canonical or not)
        left = self.codes << (m - self.lengths).astype(np.uint64)
        order = np.argsort(left, kind="stable")
        rank = np.searchsorted(left[order], window, side="right") - 1
        return self.lengths[order][rank], order[rank]
