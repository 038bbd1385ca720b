"""Banded inference of 3×3 convolutions (gicl/nn/banded.py) against the one-call definition.

Bands are forced on small maps by lowering the size threshold and the band size, so every
border case runs: the first and last band (zero padding), a last band shorter than the
others, odd heights, the nearest ×2 upsample folded into the bands, autocast, and whole
codecs whose every large convolution is banded.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_vqgan_inference import TINY_CGIC

from gicl.codecs import build_codec
from gicl.nn import banded
from gicl.nn.banded import Conv3x3, add_conv1x1


@pytest.fixture
def always_banded(monkeypatch):
    """Every inference conv banded, in bands of (at least) 8 rows."""
    monkeypatch.setattr(banded, "MIN_BANDED_BYTES", 0)
    monkeypatch.setattr(banded, "BAND_BYTES", 1)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("height", [1, 7, 8, 17, 37])
def test_banded_conv_equals_the_one_call_conv(always_banded, upsample, height) -> None:
    torch.manual_seed(height)
    conv = Conv3x3(6, 5)
    x = torch.randn(2, 6, height, 11)
    src = F.interpolate(x, scale_factor=2.0, mode="nearest") if upsample else x
    expected = F.conv2d(src, conv.weight, conv.bias, padding=1)
    with torch.no_grad():
        got = conv(x, upsample=upsample)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def silu_into(rows: torch.Tensor, a: int, b: int, out: torch.Tensor | None) -> torch.Tensor:
    """A `BandActivation`: SiLU of the rows, into `out` when given."""
    return F.silu(rows) if out is None else out.copy_(F.silu(rows))


@pytest.mark.parametrize("height", [1, 7, 8, 9, 17, 37])
def test_banded_conv_written_over_its_input_equals_the_one_call_conv(always_banded, height) -> None:
    """Each band's last input row is the next band's halo: written over its input, the
    result must still be the convolution of the original input (activated per band)."""
    torch.manual_seed(height)
    conv = Conv3x3(6, 6)
    x = torch.randn(2, 6, height, 11)
    expected = F.conv2d(F.silu(x), conv.weight, conv.bias, padding=1)
    with torch.no_grad():
        got = conv(x, pre=silu_into, into=x)
    assert got.data_ptr() == x.data_ptr()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_three_channel_tail_reads_its_wide_input_by_rows(always_banded, monkeypatch) -> None:
    """A decoder's GroupNorm → SiLU → 3-channel conv is banded because of its input."""
    from gicl.nn.blocks import group_norm, norm_silu_conv

    torch.manual_seed(0)
    norm, conv = group_norm(64).eval(), Conv3x3(64, 3)
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(norm.bias, std=0.3)
    x = torch.randn(1, 64, 29, 12) * 2 + 1
    expected = F.conv2d(F.silu(norm(x)), conv.weight, conv.bias, padding=1).detach()
    # above the threshold by its input only: it runs in bands (a recording pre proves it)
    monkeypatch.setattr(banded, "MIN_BANDED_BYTES", 64 * 29 * 12 * 4 - 1)
    seen = []
    real = banded.norm_silu

    def recording(*args, **kwargs):
        band = real(*args, **kwargs)
        return lambda rows, a, b, out: (seen.append((a, b)), band(rows, a, b, out))[1]

    monkeypatch.setattr("gicl.nn.blocks.norm_silu", recording)
    with torch.no_grad():
        got = norm_silu_conv(norm, conv, x)
    assert len(seen) > 1
    # every input row is activated once: the halo rows are carried to the next band
    assert [r for a, b in seen for r in range(a, b)] == list(range(x.shape[-2]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("height", [2, 3, 16, 17, 18, 37])
def test_banded_downsample_equals_the_padded_stride_2_conv(always_banded, height) -> None:
    torch.manual_seed(height)
    conv = torch.nn.Conv2d(6, 6, 3, stride=2)
    x = torch.randn(2, 6, height, 13)
    expected = conv(F.pad(x, (0, 1, 0, 1)))
    with torch.no_grad():
        got = banded.downsample_conv(conv, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_banded_1x1_shortcut_adds_in_place(always_banded) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 1)
    x, h = torch.randn(1, 6, 37, 9), torch.randn(1, 5, 37, 9)
    expected = h + conv(x)
    with torch.no_grad():
        got = add_conv1x1(h, conv, x)
    assert got is h
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bands_keep_autocast_and_autograd_keeps_one_call(always_banded) -> None:
    conv = Conv3x3(4, 4)
    x = torch.randn(1, 4, 20, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16  # the bands' dtype, not the input's
    y = conv(x.requires_grad_())  # training: PyTorch's own conv and its backward
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_codec_with_every_conv_banded_decodes_what_it_decoded_before(monkeypatch) -> None:
    torch.manual_seed(0)
    codec = build_codec(TINY_CGIC).eval()
    x = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    enc = codec.compress(x)
    expected = codec.decompress(enc)
    monkeypatch.setattr(banded, "MIN_BANDED_BYTES", 0)
    monkeypatch.setattr(banded, "BAND_BYTES", 1)
    again = codec.compress(x)
    assert again.sections == enc.sections
    torch.testing.assert_close(codec.decompress(enc), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", ["spatial", "plain", "glc"])
def test_norm_silu_conv_by_rows_equals_the_whole_map_blocks(always_banded, block) -> None:
    """GroupNorm statistics of the whole map, applied one band at a time before each conv
    (SpatialNorm's modulation expanded per band); the widening shortcut added by rows."""
    from gicl.nn.blocks import ResnetBlock
    from gicl.nn.glc_blocks import ResBlock

    torch.manual_seed(0)
    if block == "glc":
        module, args = ResBlock(32, 64).eval(), (torch.randn(1, 32, 36, 20),)
    else:
        module = ResnetBlock(32, 64, zq_channels=4 if block == "spatial" else None).eval()
        x = torch.randn(1, 32, 36, 20)
        args = (x, torch.randn(1, 4, 9, 5)) if block == "spatial" else (x,)
    for p in module.parameters():  # non-trivial affine parameters and biases
        torch.nn.init.normal_(p, std=0.3)
    expected = module(*args).detach()  # autograd on: the one-call path
    with torch.no_grad():
        got = module(*args)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_a_level_input_is_released_once_its_first_block_returns(network) -> None:
    """The networks run a level's blocks themselves: the level's input (at full resolution
    the largest map of the network) must not stay referenced while the later blocks run."""
    import weakref

    from gicl.nn.blocks import Decoder, Encoder

    torch.manual_seed(0)
    common = dict(ch=32, ch_mult=[1, 2], num_res_blocks=2, attn_resolutions=[], resolution=16,
                  z_channels=4)
    net = (Encoder(**common) if network == "encoder" else Decoder(**common)).eval()
    levels = net.down if network == "encoder" else net.up
    seen: dict[str, object] = {}
    for level in levels:
        first, second = level.block[0], level.block[1]
        first.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", weakref.ref(args[0])))
        second.register_forward_pre_hook(
            lambda m, args: seen.setdefault("alive", []).append(seen["input"]() is not None))
    x = torch.randn(1, 3, 16, 16) if network == "encoder" else torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        net(x)
    assert seen["alive"] == [False] * len(levels)


def test_glc_res_blocks_add_into_their_input_and_share_one_spare(always_banded) -> None:
    """GLC's block loop gives each res block (identity shortcut) its input to consume:
    conv2's output is added into that map, and conv1 writes into one dead map passed from
    block to block. The values of running each block on its own (bit for bit on an AVX-512
    Xeon; within float noise on an AVX2 AMD EPYC, where oneDNN's fused sum post-op of
    `add_conv_rows` rounds differently from conv, then add); the caller's input untouched;
    recorded by storage: every res block returns the map it read, and the conv1s of a level
    write into one map."""
    from gicl.nn.blocks import norm_silu_conv
    from gicl.nn.glc_blocks import ResBlock, VQGANGenerator

    torch.manual_seed(0)
    net = VQGANGenerator(nf=32, emb_dim=8, ch_mult=[1, 1], res_blocks=3, resolution=16,
                         attn_resolutions=[], patch=8).eval()
    x = torch.randn(1, 8, 8, 8)
    reads, writes, conv1, layouts = [], [], [], []
    for block in net.blocks:
        if isinstance(block, ResBlock):
            block.register_forward_pre_hook(lambda m, a: reads.append(a[0].untyped_storage().data_ptr()))
            block.register_forward_pre_hook(lambda m, a: layouts.append(banded.channels_last(a[0])))
            block.register_forward_hook(lambda m, a, out: writes.append(out.untyped_storage().data_ptr()))
            block.conv1.register_forward_hook(
                lambda m, a, out: conv1.append(out.untyped_storage().data_ptr()))
    with torch.no_grad():
        h = net.post_quant_conv(x)
        before = h.clone()
        expected = h.contiguous(memory_format=torch.channels_last)  # the loop's layout on a CPU
        for block in net.blocks[:-3]:  # one block at a time: nothing handed on or added into
            expected = block(expected)
        expected = norm_silu_conv(net.blocks[-3], net.blocks[-1], expected)
        reads.clear()
        writes.clear()
        conv1.clear()
        layouts.clear()
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous()
    assert layouts == [True] * 8  # the loop's maps are channels-last on a CPU
    assert torch.equal(net.post_quant_conv(x), before)  # (h above is that map: recomputed)
    # res blocks: 5 at 8×8 (after conv_in: the loop's own map), upsample, 3 at 16×16
    assert len(writes) == 8 and writes == reads
    assert len(set(conv1[:5])) == 1 and len(set(conv1[5:])) == 1 and conv1[5] != conv1[4]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_glc_block_loop_never_writes_into_its_callers_map(always_banded, layout) -> None:
    """Nor adds into it: a channels-last input is the loop's map without a copy."""
    from gicl.nn.glc_blocks import ResBlock, _run, group_norm

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([ResBlock(32, 32), ResBlock(32, 32), ResBlock(32, 32),
                                  group_norm(32), torch.nn.SiLU(), Conv3x3(32, 3)]).eval()
    x = torch.randn(1, 32, 12, 10).contiguous(memory_format=layout)
    before = x.clone()
    with torch.no_grad():
        _run(blocks, x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("zq_size", [None, (6, 5), (7, 5)])  # GN; SpatialNorm by bands; not
def test_a_narrowing_block_writes_over_the_map_it_consumes(always_banded, zq_size) -> None:
    """A 64 → 32 channel res block with a 1×1 shortcut, given its input to consume, writes
    [conv1 | shortcut] over it and returns conv2 + shortcut in the input's second half (no
    full-size map allocated): the values of the block run without consuming. With a
    SpatialNorm latent at a non-power-of-two fraction the norms run whole, and the block
    still writes over its input."""
    from gicl.nn.blocks import ResnetBlock

    torch.manual_seed(0)
    block = ResnetBlock(64, 32, zq_channels=None if zq_size is None else 4).eval()
    zq = None if zq_size is None else torch.randn(1, 4, *zq_size)
    x = torch.randn(1, 64, 24, 20)
    with torch.no_grad():
        expected = block(x, zq)
        consumed = x.clone()
        assert block.narrows_over(consumed, consume=True) and not block.narrows_over(x, False)
        got = block(consumed, zq, consume=True)
    half = 32 * 24 * 20 * consumed.element_size()
    assert got.data_ptr() == consumed.data_ptr() + half
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_decoder_levels_hand_their_maps_from_block_to_block(always_banded) -> None:
    """Through a decoder whose full-resolution level narrows 64 → 32 channels, the levels'
    res blocks write into maps the block before them has finished with; the image is the
    one every block run on its own gives, bit for bit."""
    from gicl.nn.blocks import Decoder, ResnetBlock, norm_silu_conv

    torch.manual_seed(0)
    dec = Decoder(ch=32, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[], resolution=64,
                  z_channels=4, zq_channels=4).eval()
    z, zq = torch.randn(1, 4, 9, 13), torch.randn(1, 4, 9, 13)
    reads, writes = [], []
    for block in dec.up[0].block:
        block.register_forward_pre_hook(lambda m, a: reads.append(a[0].data_ptr()))
        block.register_forward_hook(lambda m, a, out: writes.append(out.data_ptr()))
    with torch.no_grad():
        h = dec.mid(dec.conv_in(z), zq)
        for level in reversed(dec.up):
            for unit in level.units():
                h = unit(h, zq)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        expected = norm_silu_conv(dec.norm_out, dec.conv_out, h, zq)
        reads.clear()
        writes.clear()
        got = dec(z, zq)
    assert torch.equal(got, expected)
    assert isinstance(dec.up[0].block[0], ResnetBlock) and dec.up[0].block[0].conv1.in_channels == 64
    # block 0 returns its input's second half; block 1 writes into the first, block 2 into
    # the map block 1 read (block 0's output)
    half = 32 * 36 * 52 * 4
    assert writes[0] == reads[0] + half and writes[1] == reads[0] and writes[2] == reads[1]


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_convolution_added_into_a_band_of_rows_equals_conv_then_add(layout) -> None:
    """`add_conv_rows`: target += conv(band) in place, the band carrying its halo rows. On
    channels-last maps oneDNN adds while it convolves (a sum post-op); NCHW takes the plain
    conv and add. Both give the values of the two steps."""
    torch.manual_seed(0)
    conv = Conv3x3(16, 8)
    x = torch.randn(1, 16, 12, 9).contiguous(memory_format=layout)
    target = torch.randn(1, 8, 30, 9).contiguous(memory_format=layout)
    expected = target.clone()
    expected[:, :, 5:15] += F.conv2d(x, conv.weight, conv.bias, padding=(0, 1))
    rows = target[:, :, 5:15]
    with torch.no_grad():
        banded.add_conv_rows(rows, x, conv)
    assert rows.data_ptr() == target[:, :, 5:15].data_ptr()
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)


def test_group_moments_of_a_channels_last_map_are_those_of_the_map() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 37, 11) * 3 + 5  # a mean large against the spread
    var, mean = banded.group_moments(x.contiguous(memory_format=torch.channels_last), 8)
    groups = x.reshape(2, 8, -1).double()
    torch.testing.assert_close(mean, groups.mean(-1).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var, groups.var(-1, unbiased=False).float(), atol=1e-5, rtol=1e-5)


def test_flops_of_the_banded_blocks_are_those_of_the_one_call_blocks(always_banded) -> None:
    """`bench codec` counts FLOPs on the real forward: the convolutions GLC's block loop adds
    into its input by bands (a oneDNN fusion op) count as the convolutions they are."""
    from torch.utils.flop_counter import FlopCounterMode

    from gicl.nn.glc_blocks import VQGANGenerator

    torch.manual_seed(0)
    net = VQGANGenerator(nf=32, emb_dim=8, ch_mult=[1], res_blocks=2, resolution=16,
                         attn_resolutions=[], patch=8).eval()  # no upsampling (sub-pixel: fewer)
    x = torch.randn(1, 8, 16, 16)
    counts = []
    for grad in (True, False):  # one call per conv; banded, added into the input
        with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
            net(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_glc_generator_on_a_batch_equals_each_image_on_its_own(always_banded) -> None:
    """Batches of two: a band of rows of a channels-last batch is not one contiguous block,
    so the add-into-input convolution and the group statistics take their general paths."""
    from gicl.nn.glc_blocks import VQGANGenerator

    torch.manual_seed(0)
    net = VQGANGenerator(nf=32, emb_dim=8, ch_mult=[1, 1], res_blocks=2, resolution=16,
                         attn_resolutions=[], patch=8).eval()
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        batch = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)
