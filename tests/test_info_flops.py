"""`gicl info` counts FLOPs on the meta device: equal to a real forward pass, in seconds at 1080p."""

import time

import pytest
from conftest import run_cli

from gicl.info import meta_codec, meta_flops
from gicl.recipes import resolve

# FLOPs of one real forward pass (random weights, torch.rand input) of each paper codec at
# 768×512, counted once with FlopCounterMode with attention on the math kernel
# (gicl.info.forward_flops) and every convolution in one call (gicl.nn.banded's
# MIN_BANDED_BYTES raised: the banded inference's sub-pixel upsampling does 16 of the
# definition's 36 multiply-adds per input pixel, and a count is of the definition); 30 s
# each on a 2-core CPU. Recounted after windowed attention stopped querying the positions
# an overlapping tile does not output.
FULL_FORWARD_768x512 = {
    "progic": 321_668_382_720,
    "vqgan": 2_376_861_745_152,
    "controlgic": 5_603_235_446_784,
}


@pytest.mark.parametrize("recipe", sorted(FULL_FORWARD_768x512))
def test_meta_count_equals_a_full_forward_pass(recipe):
    codec = meta_codec(resolve(recipe, "paper", [])["codec"])
    assert meta_flops(codec, 512, 768) == pytest.approx(FULL_FORWARD_768x512[recipe], rel=0.01)


def test_meta_count_at_1080p_takes_seconds_and_grows_with_pixels():
    codec = meta_codec(resolve("controlgic", "paper", [])["codec"])
    start = time.perf_counter()
    flops = meta_flops(codec, 1080, 1920)
    assert time.perf_counter() - start < 10
    # more pixels, more FLOPs: above 768x512's count scaled by the padded pixel ratio
    # (convolutions alone scale with pixels; windowed attention adds)
    assert flops > FULL_FORWARD_768x512["controlgic"] * (1088 * 1920) / (512 * 768) * 0.99


def test_info_cli_at_1080p_prints_small_groups_with_digits():
    proc = run_cli("info", "--recipe", "controlgic", "--size", "1920x1080")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FLOPs at 1920x1080:" in proc.stdout and "meta device" in proc.stdout
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if line.strip().startswith("params")}
    assert "0.000020 M" in lines["quant_conv"], proc.stdout  # 20 parameters, not "0.000 M"
    assert "full forward pass" not in proc.stderr
