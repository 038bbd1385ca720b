"""Deterministic weights of the Control-GIC equivalence fixture, under the official names.

The fixture (`fixtures/controlgic_fixture.pt`) was made by running the authors' code with
weights given by a published rule set: every value depends only on (tensor name, shape,
seed 0). This is the project's own implementation of those rules, checked against the
fixture's `fill.state_dict_sha256`:
- key = crc32(f"{seed}/{name}") & 0x7FFFFFFF; for element i (row-major) a 31-bit integer hash
  of (i·0x9E3779B1 + key), three xor-shift-multiply rounds and a final xor-shift, whose top
  24 of 31 bits give u ∈ [0, 1) (multiples of 2⁻²⁴; all steps exact in 64-bit integers);
- `num_updates` → −1 (int32); scalar `decay` → 0.9999; `embedding_counter.<k>` →
  1 + floor(1000·u); 2-D tensors named `*embedding*` → 0.5·(2u − 1); other tensors with
  ≥ 2 dims → √3/√fan_in · (2u − 1); 1-D `*weight` → 1 + 0.1·(2u − 1); 1-D `*bias` →
  0.02·(2u − 1).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"
M31 = np.uint64(0x7FFFFFFF)
ROUNDS = ((15, 0x2C1B3C6D), (12, 0x297A2D39), (15, 0x1B873593))


def official_shapes() -> dict[str, list[int]]:
    """Names and shapes of the authors' state dict (model without the training loss)."""
    return json.loads((FIXTURES / "controlgic_official_state_dict.json").read_text())["tensors"]


def uniform(name: str, n: int, seed: int = 0) -> np.ndarray:
    """n values in [0, 1), float32, from the integer hash of (name, seed, index)."""
    key = np.uint64(zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF)
    x = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B1) + key) & M31
    for shift, mult in ROUNDS:
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(mult)) & M31
    x ^= x >> np.uint64(16)
    return (x >> np.uint64(7)).astype(np.float32) * np.float32(2.0**-24)


def official_tensor(name: str, shape: list[int], seed: int = 0) -> torch.Tensor:
    n = math.prod(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_updates":
        return torch.full(shape, -1, dtype=torch.int32)
    if leaf == "decay" and not shape:
        return torch.full(shape, 0.9999)
    u = uniform(name, n, seed)
    sym = u * np.float32(2) - np.float32(1)
    if ".embedding_counter." in name:
        v = np.float32(1) + np.floor(u * np.float32(1000))
    elif "embedding" in name and len(shape) == 2:
        v = np.float32(0.5) * sym
    elif len(shape) >= 2:
        v = np.float32(3**0.5 / math.sqrt(math.prod(shape[1:]))) * sym
    elif name.endswith("weight"):
        v = np.float32(1) + np.float32(0.1) * sym
    else:
        v = np.float32(0.02) * sym
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).reshape(shape)


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: official_tensor(k, v, seed) for k, v in official_shapes().items()}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over `name|dtype|shape|` + little-endian bytes, names in sorted order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()
