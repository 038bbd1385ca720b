"""Inference fast paths of the VQGAN blocks (Control-GIC, GLC) against their plain definitions.

The fast paths (channels-last activations, SpatialNorm's 1×1 convs at the latent's
resolution, in-place SiLU and residual adds without autograd, SDPA views) must compute what
the textbook formulas compute; the bf16 inference option must leave the symbols a decoder
rebuilds independent of the precision it runs in.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_glc_fill import filled_tiny_glc

from gicl.codecs import build_codec
from gicl.nn.blocks import ResnetBlock, SpatialNorm, attend
from gicl.nn.glc_blocks import ResBlock

LAYOUTS = (torch.contiguous_format, torch.channels_last)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("f_size", "z_size"), [
    ((16, 24), (8, 12)), ((4, 6), (8, 12)), ((8, 12), (8, 12)), ((12, 18), (4, 6)),
])
def test_spatial_norm_equals_the_resized_latent_formula(layout, f_size, z_size) -> None:
    """×2 up, ×2 down, same size and ×3 up (not a power of two: the resize path)."""
    torch.manual_seed(0)
    norm = SpatialNorm(64, 4).eval()
    for conv in (norm.conv_y, norm.conv_b):
        torch.nn.init.normal_(conv.bias)
    f = torch.randn(2, 64, *f_size).contiguous(memory_format=layout)
    zq = torch.randn(2, 4, *z_size).contiguous(memory_format=layout)
    with torch.no_grad():
        z = F.interpolate(zq, size=f_size, mode="nearest")
        expected = norm.norm(f) * norm.conv_y(z) + norm.conv_b(z)
        got = norm(f, zq)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_attend_is_softmax_attention_and_keeps_the_layout(layout) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 16, 5, 7).contiguous(memory_format=layout) for _ in range(3))
    out = attend(q, k, v)
    qf, kf, vf = (t.flatten(2) for t in (q, k, v))  # (b, c, n)
    w = torch.softmax(qf.transpose(1, 2) @ kf / math.sqrt(16), -1)  # (b, n, n)
    expected = (vf @ w.transpose(1, 2)).view(2, 16, 5, 7)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("block", ["spatial", "plain", "glc"])
def test_in_place_inference_path_equals_the_autograd_path(block) -> None:
    torch.manual_seed(0)
    if block == "glc":
        module, zq = ResBlock(32, 64), None
    else:
        module = ResnetBlock(32, 64, zq_channels=4 if block == "spatial" else None)
        zq = torch.randn(1, 4, 3, 5) if block == "spatial" else None
    x = torch.randn(1, 32, 12, 20)
    args = (x,) if zq is None else (x, zq)
    expected = module(*args)  # grad enabled: out-of-place
    with torch.inference_mode():
        got = module(*args)
    torch.testing.assert_close(got, expected.detach(), atol=0, rtol=0)


TINY_CGIC = {
    "name": "controlgic", "ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
    "n_embed": 64, "resolution": 64, "attn_resolutions": [8],
}


def test_controlgic_bf16_files_decode_to_the_same_symbols_in_float32() -> None:
    """Encoded with bf16 networks, decoded by a float32 twin: every section's symbol
    checksum holds (decompress verifies them), and x̂ stays near the bf16 decoder's (GLC below:
    the same with its float64 entropy-parameter path)."""
    torch.manual_seed(0)
    fp32 = build_codec(TINY_CGIC).eval()
    bf16 = build_codec({**TINY_CGIC, "inference_dtype": "bfloat16"}).eval()
    bf16.load_state_dict(fp32.state_dict())
    x = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    enc = bf16.compress(x)
    a, b = bf16.decompress(enc), fp32.decompress(enc)
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == x.shape
    assert (a - b).abs().mean() < 0.01  # bf16 rounding, not a different image


def test_glc_bf16_files_decode_to_the_same_symbols_in_float32() -> None:
    fp32 = filled_tiny_glc()
    bf16 = copy.deepcopy(fp32)
    bf16.inference_dtype = "bfloat16"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    enc = bf16.compress(x, {"quality": 2})
    a, b = bf16.decompress(enc), fp32.decompress(enc)  # symbol checksums verified in both
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == x.shape
    assert (a - b).abs().mean() < 0.01  # bf16 rounding, not a different image
