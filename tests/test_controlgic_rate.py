"""Control-GIC rate control: the stream estimate against what `compress` really writes.

The mask term must equal the stream's mask bits exactly (counted here from the mask
section's symbols, not from a formula); the index term is the coded tokens times the
table's expected code length. How far the estimate is from the real index payload is
printed, not asserted (docs/controlgic.md explains the gap).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from test_controlgic import TINY, load

from gicl.cli import main
from gicl.codecs import build_codec
from gicl.codecs.routing import route
from gicl.entropy import fixed
from gicl.images import read_image
from gicl.model_file import save_model_file

TABLE2 = ((0.0, 0.23, 0.77), (0.10, 0.67, 0.23), (0.37, 0.46, 0.17), (0.61, 0.30, 0.09),
          (0.90, 0.10, 0.0))
GRANULARITIES = ("coarse", "medium", "fine")  # the order of the index sections


@pytest.fixture(scope="module")
def codec():
    """The smoke-size codec with random weights and a skewed table (zeros included)."""
    torch.manual_seed(0)
    codec = build_codec(TINY).eval()
    codec.index_frequencies.copy_((torch.rand(64, generator=torch.Generator().manual_seed(1)) ** 4
                                   * 1000).long())
    return codec


def expected_length(codec, costs: np.ndarray) -> float:
    table = codec.index_frequencies.numpy().astype(np.float64)
    return float((table * costs).sum() / table.sum())


def photos(kodak):
    """A 128×128 centre crop of every sample photo (64 patches: a full photo's size changes
    no count rule and would only slow the suite), and one crop whose sides are not
    multiples of 16, so that padding is counted."""
    for path in sorted(kodak.glob("*.png")):
        width, height = Image.open(path).size
        left, top = (width - 128) // 2, (height - 128) // 2
        yield path.stem, load(kodak, path.name, (left, top, left + 128, top + 128))
    yield "kodim23 crop 141×83", load(kodak, "kodim23.png", (33, 71, 174, 154))


def test_stream_estimate_is_exact_on_masks_at_every_table2_point(codec, kodak):
    length = expected_length(codec, codec.coder().lengths.astype(np.float64))
    for name, x in photos(kodak):
        h, w = x.shape[-2:]
        with torch.no_grad():
            latents, (e8, e16) = codec._analyse(x)
            indices = codec._indices(latents)
        for ratios in TABLE2:
            streams = codec._streams(indices, route(e8, e16, ratios))
            sections = codec._sections(streams)
            if "crop" in name:  # the same sections as the real compress output
                assert codec.compress(x, {"ratios": list(ratios)}).sections == sections
            est = codec.stream_estimate(ratios, h, w)
            assert est.mask_bits == streams[0].numel()  # one symbol per written mask bit
            assert fixed.pack(streams[0], 1) == sections[0]
            assert len(sections[0]) == math.ceil(est.mask_bits / 8)
            assert est.tokens == {n: s.numel() for n, s in zip(GRANULARITIES, streams[1:], strict=True)}
            assert est.code_length == pytest.approx(length, rel=1e-12)
            assert est.index_bits == pytest.approx(sum(s.numel() for s in streams[1:]) * length,
                                                   rel=1e-12)
            real = 8 * sum(map(len, sections)) / (h * w)
            print(f"{name} {ratios}: estimate {est.bpp:.5f} bpp, real payload {real:.5f} bpp")


def test_range_coder_estimate_uses_its_information(codec, kodak):
    ranged = build_codec({**TINY, "entropy_coder": "range"}).eval()
    ranged.load_state_dict(codec.state_dict())
    information = ranged.coder().information
    x = load(kodak, "kodim04.png", (0, 0, 160, 224))
    est = ranged.stream_estimate(TABLE2[2], 224, 160)
    assert est.code_length == pytest.approx(expected_length(ranged, information), rel=1e-12)
    # the table's expected −log₂ p is its cross-entropy: never below the Huffman code's bound
    assert est.code_length <= codec.stream_estimate(TABLE2[2], 224, 160).code_length
    with torch.no_grad():
        latents, (e8, e16) = ranged._analyse(x)
    streams = ranged._streams(ranged._indices(latents), route(e8, e16, TABLE2[2]))
    assert est.mask_bits == streams[0].numel()
    assert est.index_bits == pytest.approx(sum(s.numel() for s in streams[1:]) * est.code_length)


def test_point_for_bpp_follows_the_stream_estimate(codec):
    for ratios in TABLE2:
        target = codec.stream_estimate(ratios, 512, 768).bpp
        assert codec.point_for_bpp(target, 512, 768)["ratios"] == list(ratios)
    # the stream's mask term (5 − 4r₃)/256 is not eq. 13's (4r₁ + r₂)/256: at all-coarse the
    # stream writes N₁₆ mask bits where eq. 13 counts none
    assert codec.stream_estimate((0.0, 0.0, 1.0), 512, 768).mask_bits == 512 * 768 // 256


def test_compress_with_bpp_prints_the_estimate_beside_the_real_payload(codec, kodak, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "controlgic.pt"
    save_model_file(codec, model)
    image = tmp_path / "photo.png"
    Image.open(kodak / "kodim21.png").crop((100, 50, 356, 242)).save(image)
    stream = tmp_path / "photo.gic"
    proc = run_cli("compress", str(image), str(stream), "--ckpt", str(model), "--bpp", "0.2",
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    h, w = read_image(image).shape[-2:]
    point = {"ratios": [float(v) for v in re.search(r'"ratios": \[([^]]+)\]', proc.stdout)
                        .group(1).split(",")]}
    assert point == codec.point_for_bpp(0.2, h, w)
    found = re.search(r"rate control: target 0.2 bpp, estimate ([0-9.]+) bpp, "
                      r"real payload ([0-9.]+) bpp", proc.stdout)
    assert found, proc.stdout
    assert float(found.group(1)) == pytest.approx(codec.estimate_bpp(point, h, w), abs=1e-6)
    payload = float(re.search(r"\(payload ([0-9.]+) bpp\)", proc.stdout).group(1))
    assert float(found.group(2)) == payload

    # without --bpp nothing is estimated (the same CLI in-process)
    assert main(["compress", str(image), str(tmp_path / "b.gic"), "--ckpt", str(model),
                 "--point", '{"ratios": [0.5, 0.4, 0.1]}', "--device", "cpu"]) == 0
    assert "rate control" not in capsys.readouterr().out
