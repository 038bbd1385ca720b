"""ProGIC's fused inference path (channels-last GEMMs, folded modulation, tiled FFN) against
the reference path: the same indices, the same bitstream, x̂ within 1e-4."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gicl.codecs.base import EncodedImage
from gicl.codecs.progic import ProGIC
from gicl.nn.depthconv import FFN_TILE_BYTES, StageModulation, set_fused


class OpLog(TorchDispatchMode):
    """Names of the aten operators that run (to see which path ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The FFN runs in row tiles on one CPU thread only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_codec(variant: str) -> ProGIC:
    """A paper-size ProGIC with random weights and non-identity per-stage modulation, so
    that folding the modulation into the GEMMs is exercised."""
    torch.manual_seed(0)
    codec = ProGIC(variant=variant).eval()
    with torch.no_grad():
        for m in codec.decoder.modules():
            if isinstance(m, StageModulation):
                m.scale.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return codec


@pytest.mark.parametrize("variant", ["small", "base"])
def test_fused_path_codes_the_same_stream_as_the_reference(variant: str, one_thread: None) -> None:
    codec = random_codec(variant)
    # 48×80: 3×5 latent positions; the FFN runs in row tiles of the decoder's 24×40
    # features (256 rows small, 178 base), the last one partial
    x = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    streams, decoded = {}, {}
    with torch.no_grad():
        for fused in (False, True):
            set_fused(codec, fused)
            streams[fused] = codec.compress(x, {"stages": 5})
            decoded[fused] = [
                codec.decompress(EncodedImage(streams[fused].sections[:k],
                                              streams[fused].checksums[:k],
                                              streams[fused].point, streams[fused].size))
                for k in (1, 3, 5)
            ]
    assert streams[True].sections == streams[False].sections
    assert streams[True].checksums == streams[False].checksums
    for k, ref, fast in zip((1, 3, 5), decoded[False], decoded[True], strict=True):
        assert fast.shape == ref.shape == x.shape and fast.is_contiguous()
        assert (fast - ref).abs().max() <= 1e-4, f"prefix {k}"
    # the stages really differ (the modulation of each stage is folded, not one for all)
    assert (decoded[True][0] - decoded[True][2]).abs().max() > 1e-2


def test_ffn_row_tiles_do_not_change_the_result(
    monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    codec = random_codec("small")
    y = torch.randn(1, 256, 5, 7, generator=torch.Generator().manual_seed(2))
    rows = 2 * 5 * 2 * 7 * 2 * 2  # the decoder's 40×56 feature positions
    assert FFN_TILE_BYTES // (4 * 2 * 2 * 256) < rows  # the default tiles them
    with torch.no_grad():
        tiled = codec.decode_latent(y, 3)
        monkeypatch.setattr("gicl.nn.depthconv.FFN_TILE_BYTES", 1 << 40)  # one tile
        whole = codec.decode_latent(y, 3)
    assert (whole - tiled).abs().max() <= 1e-5


def test_fused_path_runs_only_without_autograd_and_for_one_stage() -> None:
    codec = ProGIC(channels=16, enc_blocks=1, dec_blocks=1, latent_channels=8,
                   num_stages=2, codebook_size=16, attention_blocks=1).eval()
    x = torch.rand(2, 3, 32, 32)

    def ops(grad: bool, point: dict) -> list[str]:
        with torch.set_grad_enabled(grad), OpLog() as log:
            codec(x, point)
        return log.ops

    fused = ops(False, {"stages": 2})
    # convolutions left: 6 depthwise (1 block + a 1-block attention's 2 on each side) and
    # the down convolution;
    # every 1×1 convolution is a GEMM
    assert fused.count("aten.convolution") == 7 and "aten.addmm" in fused
    for reference in (ops(True, {"stages": 2}), ops(False, {"stages": 2, "all_stages": True})):
        assert reference.count("aten.convolution") > 7
    # under autocast (a bf16-mixed validation step) the reference path runs: its GEMMs
    # would mix dtypes in the fused path's output buffers
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), OpLog() as log:
        codec(x)
    assert log.ops.count("aten.convolution") > 7
