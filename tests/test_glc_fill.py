"""Deterministic GLC weights: the equivalence fixture's fill rules, implemented here.

Every value depends only on (official tensor name, shape, seed): uniforms come from a 31-bit
integer hash of (crc32("<seed>/<name>"), element index) in int64 arithmetic, so the weights
are bit-identical on every machine and torch version. Rules, in order: `q_enc`/`q_dec` →
U(0.5, 1.5); 2-D tensors named `*embedding*` (codebooks) → U(−0.25, 0.25); other tensors with
≥ 2 dims → U(−g, g)·/√fan_in with g = 1.2; 1-D `*weight` → 1 + U(−0.1, 0.1); 1-D `*bias` →
U(−0.02, 0.02). The fixture records the sha256 of the filled official state dict; matching
it proves both this fill and gicl's official tensor names and shapes.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch

from gicl.codecs.glc import GLC

STATE_DICT_SHA256 = "31dc43d74348991f4b5b41d7ba3727863a9df65e42cfb7360734f9f32b74bab5"
GAIN, CODEBOOK, NORM_NOISE, BIAS, Q_LO, Q_HI = 1.2, 0.25, 0.1, 0.02, 0.5, 1.5
_MASK31 = 0x7FFFFFFF


def hash_uniform(key: int, n: int) -> torch.Tensor:
    """n float32 values in [0, 1), multiples of 2⁻²⁴, from an integer hash of (key, i)."""
    x = torch.arange(n, dtype=torch.int64)
    x = (x * 0x9E3779B1 + key) & _MASK31
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _MASK31
    x = ((x ^ (x >> 12)) * 0x297A2D39) & _MASK31
    x = ((x ^ (x >> 15)) * 0x1B873593) & _MASK31
    x = x ^ (x >> 16)
    return (x >> 7).to(torch.float32) * (1.0 / 16777216.0)


def fill_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    n = math.prod(shape)
    u = hash_uniform(zlib.crc32(f"{seed}/{name}".encode()) & _MASK31, n)
    if name in ("q_enc", "q_dec"):
        v = Q_LO + (Q_HI - Q_LO) * u
    elif "embedding" in name and len(shape) == 2:
        v = CODEBOOK * (u * 2.0 - 1.0)
    elif len(shape) >= 2:
        v = GAIN / math.sqrt(math.prod(shape[1:])) * (u * 2.0 - 1.0)
    elif name.endswith("weight"):
        v = 1.0 + NORM_NOISE * (u * 2.0 - 1.0)
    elif name.endswith("bias"):
        v = BIAS * (u * 2.0 - 1.0)
    else:
        raise ValueError(f"no fill rule for {name} {shape}")
    return v.reshape(shape)


def filled_state_dict(codec: GLC, seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: fill_tensor(k, tuple(v.shape), seed) for k, v in codec.state_dict().items()}


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted names of `name|dtype|shape|` + raw little-endian bytes."""
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def filled_glc() -> tuple[GLC, dict[str, torch.Tensor]]:
    """The official-size GLC in eval mode with the fixture's weights, and those weights."""
    codec = GLC()
    sd = filled_state_dict(codec)
    codec.load_state_dict(sd, strict=True)
    return codec.eval(), sd


def test_fill_matches_the_fixture_weights() -> None:
    codec = GLC()
    sd = filled_state_dict(codec)
    assert len(sd) == 792
    assert state_dict_sha256(sd) == STATE_DICT_SHA256
