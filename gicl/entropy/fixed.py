"""Fixed-length codes: each symbol as exactly `bits` bits, MSB first, zero-padded to a byte.

Used by codecs whose indices carry no entropy coding (ProGIC, single-scale VQ): the
payload length is exactly `count·bits` bits rounded up to whole bytes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gicl.errors import BitstreamError


def pack(symbols: Tensor, bits: int) -> bytes:
    """Pack non-negative integers < 2**bits, MSB first."""
    v = symbols.detach().to("cpu", torch.int64).reshape(-1).numpy()
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"symbols out of range for {bits}-bit codes")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_array = ((v[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return np.packbits(bit_array.reshape(-1)).tobytes()


def unpack(data: bytes, bits: int, count: int, *, exact: bool = True) -> Tensor:
    """Inverse of `pack`; raises BitstreamError when `data` is too short for `count` codes
    or, with `exact`, longer (trailing bytes: no writer makes them)."""
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise BitstreamError(f"section holds {len(data)} bytes, {need} needed: the file is truncated")
    if exact and len(data) > need:
        raise BitstreamError(f"section holds {len(data)} bytes, {need} expected: it has trailing "
                             "bytes, the file is corrupted")
    bit_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    values = bit_array.reshape(count, bits).astype(np.int64) @ weights
    return torch.from_numpy(values)


def packed_bits(count: int, bits: int) -> int:
    """Payload bits that `pack` writes for `count` symbols, byte padding included."""
    return 8 * ((count * bits + 7) // 8)
