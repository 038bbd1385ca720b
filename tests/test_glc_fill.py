"""Deterministic GLC weights: the equivalence fixture's fill rules, implemented here (a helper
module of test_glc.py and test_glc_codec.py; its check against the fixture is in test_glc.py).

Every value depends only on (official tensor name, shape, seed): uniforms come from a 31-bit
integer hash of (crc32("<seed>/<name>"), element index) in int64 arithmetic, so the weights
are bit-identical on every machine and torch version. Rules, in order: `q_enc`/`q_dec` →
U(0.5, 1.5); 2-D tensors named `*embedding*` (codebooks) → U(−0.25, 0.25); other tensors with
≥ 2 dims → U(−1, 1)·g/√fan_in with g = 1.2; 1-D `*weight` → 1 + U(−0.1, 0.1); 1-D `*bias` →
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
    # in place: the official model has 164 M weights, and temporaries would dominate
    x = torch.arange(n, dtype=torch.int64).mul_(0x9E3779B1).add_(key).bitwise_and_(_MASK31)
    for shift, mult in ((15, 0x2C1B3C6D), (12, 0x297A2D39), (15, 0x1B873593)):
        x.bitwise_xor_(x >> shift).mul_(mult).bitwise_and_(_MASK31)
    x.bitwise_xor_(x >> 16)
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
    with torch.device("meta"):  # no throw-away random init of 164 M weights
        codec = GLC()
    sd = filled_state_dict(codec)
    codec.load_state_dict(sd, strict=True, assign=True)
    codec.z_vq.usage = torch.zeros_like(codec.z_vq.usage, device="cpu")
    codec.vqgan.quantize.usage = torch.zeros_like(codec.vqgan.quantize.usage, device="cpu")
    return codec.eval(), sd


# A small GLC (same structure, narrow layers, 256-entry codebooks) for fast round trips.
TINY = {
    "name": "glc", "channels": 64, "nf": 32, "codebook_size": 256, "code_pred_dim": 32,
    "code_pred_heads": 2, "code_pred_layers": 1,
}


def filled_tiny_glc() -> GLC:
    """The small GLC, built from its recipe config, with the same fill rules (eval mode)."""
    from gicl.codecs import build_codec

    codec = build_codec(TINY)
    codec.load_state_dict(filled_state_dict(codec), strict=True)
    return codec.eval()
