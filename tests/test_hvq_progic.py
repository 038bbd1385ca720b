"""HVQ-ProGIC codec (ProGIC's RVQ stages coded by HyperVQ, progressive prefixes kept) and
HVQ-VQGAN (VQGAN's one index map coded by HyperVQ): the two codecs of one framed section per
HyperVQ branch (`gicl/codecs/branch_sections.py`)."""

from __future__ import annotations

import pytest
import torch
from conftest import WORD_SLACK_BITS, assert_hyper_stream_cost, kodak_crop
from test_bitstream_progressive import TINY as VQGAN_TINY

from gicl import bitstream
from gicl.codecs import build_codec
from gicl.codecs.branch_sections import FRAME
from gicl.errors import BitstreamError, RecipeError

TINY = {"name": "hvq_progic", "channels": 16, "enc_blocks": 1, "dec_blocks": 1,
        "latent_channels": 8, "codebook_size": 32, "num_stages": 3, "attention_blocks": 1,
        "hyper_channels": 8}
TINY_VQGAN = {"name": "hvq_vqgan", **VQGAN_TINY, "hyper_channels": 8}
BOXES = [(0, 0, 96, 64), (200, 100, 283, 149)]  # 96×64 and odd 83×49
FINGERPRINT = "ab" * 32


@pytest.fixture(scope="module")
def codecs():
    out = {}
    for config in (TINY, TINY_VQGAN):
        torch.manual_seed(0)
        c = build_codec(config)
        c.update()
        out[config["name"]] = c.eval()
    return out


@pytest.fixture
def codec(codecs):
    return codecs["hvq_progic"]


@pytest.mark.parametrize("box", BOXES)
def test_every_prefix_of_a_file_decodes_to_progics_stage_k(codec, box):
    """Through the real container: the file of all N stages cut after k sections decodes to
    ProGIC's forward at k stages."""
    x = kodak_crop("kodim23.png", box)
    n = codec.backbone.num_stages
    enc = codec.compress(x, {"stages": n})
    assert len(enc.sections) == n
    data = bitstream.write(enc, FINGERPRINT, codec.operating_points())
    full = bitstream.read(data)
    for k in range(1, n + 1):
        with torch.no_grad():
            expected = codec.backbone(x, {"stages": k}).x_hat
        decoded = codec.decompress(bitstream.bind(full.prefix(k), codec, FINGERPRINT))
        assert torch.equal(decoded, expected), k


@pytest.mark.parametrize("name", ["hvq_progic", "hvq_vqgan"])
@pytest.mark.parametrize("box", BOXES)
def test_round_trip_equals_forward_and_payload_matches_tables(codecs, name, box):
    codec = codecs[name]
    x = kodak_crop("kodim15.png", box)
    for point in codec.operating_points():  # ProGIC: k = 1..N stages; VQGAN: its one point
        with torch.no_grad():
            out = codec(x, point)
        enc, table_bits = codec.compress_with_report(x, point)
        branches = list(codec.codebooks(len(enc.sections)))  # section i codes branch i
        assert len(enc.sections) == enc.point.get("stages", 1)
        assert torch.equal(codec.decompress(enc), out.x_hat)
        streams = codec.stream_bits(enc)
        for branch, section in zip(branches, enc.sections, strict=True):
            # [u16 h, u16 w, u32 hyper length][hyper][indices]
            length = int.from_bytes(section[4:8], "big")
            payload = 8 * (len(section) - 8 - length)
            assert (streams[branch], streams[f"hyper_{branch}"]) == (payload, 8 * length)
            bound = 0.005 * table_bits[branch] + WORD_SLACK_BITS
            assert abs(payload - table_bits[branch]) <= bound, (branch, payload, table_bits[branch])
            key = f"hyper_{branch}"
            rz, tables, hyper = float(out.rate[key][0]), table_bits[key], 8 * length
            assert_hyper_stream_cost(key, hyper, tables, rz)
        assert set(out.rate) == {f"{p}{b}" for b in branches for p in ("", "hyper_")}
        pixels = x.shape[-2] * x.shape[-1]
        ind = sum(float(out.rate[b][0]) for b in branches)
        assert abs(float(out.losses["rate_ind"]) - ind / pixels) <= 1e-6 * ind
        with torch.no_grad():  # the backbone's fixed-length bits, kept for comparison
            static = codec.static_baseline()(x, point).rate
        assert all(torch.equal(out.extras["static_rate"][k], v) for k, v in static.items())


def test_rates_train_the_hyperprior_and_static_baseline_is_progic():
    torch.manual_seed(1)
    c = build_codec(TINY).train()
    x = kodak_crop("kodim15.png", (0, 0, 64, 64))
    out = c(x, {"stages": 2})
    (out.losses["rate_ind"] + out.losses["rate_z"]).backward()
    groups = c.parameter_groups()
    assert set(groups) == {"backbone", "hyperprior"}
    assert len(c.aux_parameters()) == 3  # one EntropyBottleneck per stage
    # stage 3 is not used at k = 2: its H Block gets no gradient; stages 1, 2 do
    for i, used in ((1, True), (2, True), (3, False)):
        g = c.hyperprior.blocks[f"stage{i}"].synthesis[-1].weight.grad
        assert (g is not None and float(g.abs().sum()) > 0) == used, i
    # the rate reaches the encoder through the stage inputs (y, r₂)
    assert float(c.backbone.encoder.down.weight.grad.abs().sum()) > 0
    assert c.static_baseline() is c.backbone
    assert float(out.extras["static_rate"]["indices"][0]) == 2 * 5 * 4 * 4  # k·L·positions


def test_unknown_key_and_truncated_file(codec):
    with pytest.raises(RecipeError, match="codec.codebook_sizes"):
        build_codec({**TINY, "codebook_sizes": 8})
    x = kodak_crop("kodim15.png", (0, 0, 64, 64))
    enc = codec.compress(x, {"stages": 2})
    first = enc.sections[0]
    overlong = FRAME.pack(*FRAME.unpack_from(first)[:2], len(first)) + first[FRAME.size:]
    with pytest.raises(BitstreamError, match="shorter than the hyper stream"):
        codec.decompress(type(enc)([overlong], enc.checksums[:1], enc.point, enc.size))
    with pytest.raises(BitstreamError, match="codes a 4×4 latent, the image size 4096×64"):
        codec.decompress(type(enc)(enc.sections, enc.checksums, enc.point, (4096, 64)))
    data = bitstream.write(enc, FINGERPRINT, codec.operating_points())
    with pytest.raises(BitstreamError) as err:  # cut inside the last section
        codec.decompress(bitstream.bind(bitstream.read(data[:-3]), codec, FINGERPRINT))
    assert "\n" not in str(err.value)
