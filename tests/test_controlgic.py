"""Control-GIC codec: size of the paper model, rate model (Table 2), router, bitstream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gicl.codecs import build_codec
from gicl.codecs.controlgic import CURVE, count_split, curve_ratios, theoretical_bpp
from gicl.codecs.routing import patch_entropies, route, token_counts
from gicl.entropy.huffman import HuffmanCode
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.blocks import AttnBlock

TINY = {
    "name": "controlgic", "ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
    "n_embed": 64, "resolution": 64, "attn_resolutions": [8],
}
TRIPLES = ([0.5, 0.4, 0.1], [0.2, 0.5, 0.3], [1.0, 0.0, 0.0])


def load(kodak, name: str, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    img = Image.open(kodak / name).convert("RGB")
    if box is not None:
        img = img.crop(box)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    codec = build_codec(TINY).eval()
    table = (torch.rand(64, generator=torch.Generator().manual_seed(1)) ** 4 * 1000).long()
    codec.index_frequencies.copy_(table)  # a skewed table, zeros included
    return codec


def test_paper_model_size():
    with torch.device("meta"):
        codec = build_codec({"name": "controlgic"})
    n = count_split(codec)
    print(f"\nControl-GIC parameters: {n}")
    assert abs(n["total"] - 130.4e6) <= 0.02 * 130.4e6
    # the official state dict, exactly: encoder 52 351 116 + quant_conv 20, decoder 78 003 715
    # + post_quant_conv 20, codebook 1024 × 4
    assert (n["encoder"], n["decoder"], n["quantizer"]) == (52_351_136, 78_003_735, 4096)


def test_table2_theoretical_bpp():
    table2 = [
        ((0.0, 0.23, 0.77), 0.070), ((0.10, 0.67, 0.23), 0.187), ((0.37, 0.46, 0.17), 0.330),
        ((0.61, 0.30, 0.09), 0.460), ((0.90, 0.10, 0.0), 0.616),
    ]
    for ratios, bpp in table2:
        assert abs(theoretical_bpp(ratios, L=10.3875) - bpp) <= 0.0015
    bpps = [theoretical_bpp(r) for r in curve_ratios()]
    assert all(b2 >= b1 for b1, b2 in zip(bpps, bpps[1:], strict=False))  # one bpp per point


def brute_force_entropy(gray: np.ndarray, p: int) -> np.ndarray:
    """Appendix A.2 written out per patch in float64."""
    bins = np.linspace(-1, 1, 32)
    h, w = gray.shape[0] // p, gray.shape[1] // p
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            px = gray[i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(-1, 1)
            f = np.exp(-((px - bins) ** 2) / (2 * 0.01**2)).mean(0)
            f = f / f.sum()
            f = f[f > 0]
            out[i, j] = -(f * np.log(f)).sum()
    return out


def test_router_counts_and_lowest_entropy_patches(kodak):
    x = torch.cat([load(kodak, "kodim23.png", (160, 96, 416, 288)),
                   load(kodak, "kodim08.png", (0, 0, 256, 192))]) * 2 - 1
    e8, e16 = patch_entropies(x)
    rgb = x.double().numpy()
    gray = 0.2989 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    ref8 = [brute_force_entropy(g, 8) for g in gray]
    ref16 = [brute_force_entropy(g, 16) for g in gray]
    for b in range(2):
        np.testing.assert_allclose(e8[b].numpy(), ref8[b], atol=2e-4)
        np.testing.assert_allclose(e16[b].numpy(), ref16[b], atol=2e-4)
    n16, n8 = e16[0].numel(), e8[0].numel()
    for r1, r2, r3 in ([0.5, 0.4, 0.1], [0.1, 0.67, 0.23], [0.0, 0.23, 0.77], [0.9, 0.1, 0.0]):
        m = route(e8, e16, (r1, r2, r3))
        covered = m.coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
        cells = covered.long() + m.medium
        tokens = cells.repeat_interleave(2, -2).repeat_interleave(2, -1) + m.fine
        assert (tokens == 1).all()  # every H/4 position belongs to exactly one granularity
        for b in range(2):
            coarse, medium = m.coarse[b, 0].numpy(), m.medium[b, 0].numpy()
            rest = ~covered[b, 0].numpy() & ~medium
            n_c, n_m, n_f = int(coarse.sum()), int(medium.sum()), int(m.fine[b].sum()) // 4
            # exact counts per image: round(N16·r3), round(4·N16·r3 + N8·r2) − 4·n_c, rest
            assert abs(n_c - n16 * r3) <= 0.5 + 1e-9
            assert abs(4 * n_c + n_m - (4 * n16 * r3 + n8 * r2)) <= 0.5 + 1e-9
            assert n_f == rest.sum() and abs(n_f - n8 * r1) <= 0.5 + 1e-9
            # coarse = the lowest 16×16 entropies; medium = the lowest 8×8 among the rest
            if 0 < n_c < n16:
                assert ref16[b][coarse].max() <= ref16[b][~coarse].min() + 1e-4
            if n_m and rest.any():
                assert ref8[b][medium].max() <= ref8[b][rest].min() + 1e-4
    assert token_counts((0.0, 0.0, 1.0), n16) == (n16, 0)
    assert token_counts((0.0, 1.0, 0.0), n16) == (0, n8)


def payload_matches_rate(codec, out, enc) -> None:
    """Real section sizes = the forward rate (code lengths / mask bits) padded to bytes, and
    the rate is the Huffman code lengths of exactly the coded tokens."""
    code = HuffmanCode.from_counts(codec.index_frequencies.numpy())
    for section, name in zip(enc.sections, ("masks", "coarse", "medium", "fine"), strict=True):
        bits = int(out.rate[name][0])
        assert len(section) == math.ceil(bits / 8), name
        if name != "masks":
            coded = out.extras["indices"][name][out.extras["masks"][name][:, 0]].numpy()
            assert bits == int(code.lengths[coded].sum())
    n16 = out.extras["masks"]["coarse"][0].numel()
    assert int(out.rate["masks"][0]) == 5 * n16 - 4 * int(out.extras["masks"]["coarse"].sum())


@pytest.mark.parametrize(
    "image,box,ratios",
    [
        ("kodim04.png", None, TRIPLES[0]),  # portrait 512×768
        ("kodim21.png", (300, 200, 484, 338), TRIPLES[1]),  # 184×138: padded to 192×144
        ("kodim15.png", (64, 64, 256, 256), TRIPLES[2]),
    ],
)
def test_round_trip_equals_forward(tiny, kodak, image, box, ratios):
    x = load(kodak, image, box)
    point = {"ratios": ratios}
    with torch.no_grad():
        out = tiny(x, point)
    enc = tiny.compress(x, point)
    x_hat = tiny.decompress(enc)
    assert x_hat.shape == x.shape == out.x_hat.shape
    assert (x_hat - out.x_hat).abs().max() <= 1e-5
    assert enc.size == tuple(x.shape[-2:]) and enc.point == point
    payload_matches_rate(tiny, out, enc)


def test_table_travels_in_the_state_dict_and_checksums_catch_desync(tiny, kodak):
    x = load(kodak, "kodim07.png", (0, 0, 128, 96))
    enc = tiny.compress(x, {"ratios": [0.3, 0.4, 0.3]})
    other = build_codec(TINY).eval()
    other.load_state_dict(tiny.state_dict())
    assert torch.equal(other.decompress(enc), tiny.decompress(enc))
    other.accumulate_frequencies(torch.arange(64) * 50)  # another table: codes change
    assert not np.array_equal(other.coder().lengths, tiny.coder().lengths)
    with pytest.raises(BitstreamError):
        other.decompress(enc)
    with pytest.raises(BitstreamError):
        tiny.decompress(type(enc)(enc.sections[:3], enc.checksums[:3], enc.point, enc.size))


def test_range_coder_option(tiny, kodak):
    x = load(kodak, "kodim13.png", (0, 0, 192, 128))
    point = {"ratios": [0.6, 0.3, 0.1]}
    codecs = {}
    for coder in ("huffman", "range"):
        codecs[coder] = build_codec({**TINY, "entropy_coder": coder}).eval()
        codecs[coder].load_state_dict(tiny.state_dict())
    with torch.no_grad():
        counts = tiny(x, point).index_counts
    for codec in codecs.values():  # the table this image's tokens actually follow
        codec.index_frequencies.copy_(counts + 1)
        assert codec.coder() is codec.coder()  # cached until the table changes
    with torch.no_grad():
        out = codecs["range"](x, point)
    enc = codecs["range"].compress(x, point)
    assert (codecs["range"].decompress(enc) - out.x_hat).abs().max() <= 1e-5
    range_bits = sum(map(len, enc.sections[1:])) * 8
    huffman_bits = sum(map(len, codecs["huffman"].compress(x, point).sections[1:])) * 8
    ideal = sum(float(out.rate[n][0]) for n in ("coarse", "medium", "fine"))
    print(f"\nindex payload: range {range_bits} bits, Huffman {huffman_bits}, ideal {ideal:.0f}")
    assert range_bits < huffman_bits
    assert ideal <= range_bits <= ideal + 3 * 64  # ≤ two 32-bit words per section


def test_point_for_bpp_estimate_and_exact(tiny, kodak):
    paper = build_codec({**TINY, "n_embed": 1024})  # K = 1024 and no table yet: L = 10.3875
    assert paper.mean_code_length() == 10.3875
    assert paper.expected_code_length() == 10.0  # the uniform table's code: 10 bits an index
    for anchor in CURVE[1:-1]:  # the default search follows the stream estimate
        point = paper.point_for_bpp(paper.stream_estimate(anchor, 512, 768).bpp, 512, 768)
        assert point["ratios"] == list(anchor)
    points = paper.operating_points()
    bpps = [theoretical_bpp(p["ratios"]) for p in points]
    assert bpps == sorted(bpps) and bpps[0] < 0.06 and bpps[-1] > 0.6

    x = load(kodak, "kodim05.png", (100, 100, 292, 228))
    h, w = x.shape[-2:]
    # real sizes along the whole curve, from the encoder run once (what compress writes)
    with torch.no_grad():
        latents, (e8, e16) = tiny._analyse(x)
        idx = tiny._indices(latents)
    real = [8 * sum(map(len, tiny._sections(tiny._streams(idx, route(e8, e16, r)))))
            / (h * w) for r in curve_ratios()]
    step = max(abs(b - a) for a, b in zip(real, real[1:], strict=False))
    for target in (0.3 * real[0] + 0.7 * real[-1], 0.8 * real[0] + 0.2 * real[-1]):
        point = tiny.point_for_bpp(target, h, w, exact=True, x=x)
        got = 8 * sum(map(len, tiny.compress(x, point).sections)) / (h * w)
        assert got == real[curve_ratios().index(tuple(point["ratios"]))]
        assert abs(got - target) <= step  # hits the target within one grid step
    with pytest.raises(ValueError):
        tiny.point_for_bpp(0.2, h, w, exact=True)


def test_bad_points_and_configs():
    codec = build_codec(TINY)
    x = torch.zeros(1, 3, 32, 32)
    for bad in ({"ratios": [0.5, 0.5, 0.5]}, {"ratios": [1.2, -0.2, 0.0]}, {"ratios": 3},
                {"ratio": [1, 0, 0]}):
        with pytest.raises(UserError):
            codec(x, bad)
    with pytest.raises(RecipeError, match="entropy_coder"):
        build_codec({**TINY, "entropy_coder": "lzma"})
    with pytest.raises(RecipeError, match="ch_mult"):
        build_codec({**TINY, "ch_mult": [1, 1, 1, 1]})


def test_forward_trains_with_masked_vq_and_counts(tiny, kodak):
    x = load(kodak, "kodim02.png", (0, 0, 64, 64)).repeat(2, 1, 1, 1)
    tiny.train()
    try:
        out = tiny(x, {"ratios": [0.5, 0.4, 0.1]})
    finally:
        tiny.eval()
    (out.x_hat.mean() + out.losses["vq"]).backward()
    assert tiny.encoder.conv_out_fine.weight.grad is not None
    assert tiny.quantizer.embedding.weight.grad is not None
    m, idx = out.extras["masks"], out.extras["indices"]
    coded = sum(int(m[n].sum()) for n in m)
    assert int(out.index_counts.sum()) == coded
    expected = sum(torch.bincount(idx[n][m[n][:, 0]], minlength=64) for n in m)
    assert torch.equal(out.index_counts, expected)
    tiny.zero_grad(set_to_none=True)


def brute_force_windowed(block: AttnBlock, x: torch.Tensor, win: int) -> torch.Tensor:
    """Each query attends to the window×window tile that owns it (last tile shifted back)."""
    h = block.norm(x)
    q, k, v = block.q(h)[0], block.k(h)[0], block.v(h)[0]
    c, hh, ww = q.shape

    def span(n: int, p: int) -> range:
        size = min(n, win)
        start = min((p // size) * size, n - size)
        return range(start, start + size)

    out = torch.zeros_like(q)
    for i in range(hh):
        for j in range(ww):
            rows, cols = span(hh, i), span(ww, j)
            keys = k[:, rows.start : rows.stop, cols.start : cols.stop].reshape(c, -1)
            vals = v[:, rows.start : rows.stop, cols.start : cols.stop].reshape(c, -1)
            att = torch.softmax(q[:, i, j] @ keys / math.sqrt(c), 0)
            out[:, i, j] = vals @ att
    return x + block.proj_out(out[None])


def test_windowed_attention_uses_full_windows_at_borders():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(1, 32, 11, 7)
    with torch.no_grad():
        glob = block(x)
        block.window = 4
        np.testing.assert_allclose(block(x), brute_force_windowed(block, x, 4), atol=1e-5)
        block.window = 16  # larger than the input: global attention
        assert torch.equal(block(x), glob)


def test_windowed_attention_of_a_batch_is_each_image_s():
    """Overlapping last tiles query only their new rows and columns: with several images
    per batch, each image's output is the one it gets alone (and the brute-force one)."""
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    block.window = 4
    x = torch.randn(3, 32, 11, 7)
    with torch.no_grad():
        batch = block(x)
        for i in range(3):
            torch.testing.assert_close(batch[i : i + 1], block(x[i : i + 1]), atol=1e-6, rtol=1e-6)
            np.testing.assert_allclose(batch[i : i + 1], brute_force_windowed(block, x[i : i + 1], 4),
                                       atol=1e-5)
