"""`gicl bdrate`: published JCT-VC BD-rate numbers, the sign convention, and the direction
of lower-is-better metrics."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli

from gicl.errors import UserError
from gicl.evaluation.bdrate import Curve, bd_rate, load_curve

# JCTVC-E137's worked examples (PCHIP, as in the JCT-VC CTC Excel sheet), as used to validate
# Netflix vmaf's BD-rate calculator: (kbps, PSNR) anchor and test, BD-rate in percent.
JCTVC = [
    ([(108048.8736, 43.6471), (61279.976, 40.3953), (33905.6656, 37.247), (18883.6928, 34.2911)],
     [(108061.2784, 43.6768), (61299.9936, 40.4232), (33928.7472, 37.2761), (18910.912, 34.3147)],
     -0.465215420752807),
    ([(40433.8848, 37.5761), (7622.7456, 35.3756), (2394.488, 33.8977), (1017.6184, 32.0603)],
     [(40370.12, 37.5982), (7587.0024, 35.4025), (2390.0944, 33.9194), (1017.0984, 32.0822)],
     -1.8779823450567612),
]


def curve(points) -> Curve:
    return Curve("c", [r for r, _ in points], [q for _, q in points])


def summary(path, metric: str, points) -> None:
    path.write_text(json.dumps({"format": "gicl-eval", "model": {"codec": "vqgan"},
                                "points": [{"bpp": r, metric: q} for r, q in points]}))


@pytest.mark.parametrize("anchor,test,expected", JCTVC)
def test_reproduces_published_jctvc_bd_rates(anchor, test, expected):
    assert bd_rate(curve(anchor), curve(test), "psnr").rate_percent == pytest.approx(
        expected, abs=1e-4)


def test_cli_prints_the_published_number_with_its_sign_convention(tmp_path):
    anchor, test, expected = JCTVC[1]
    summary(tmp_path / "a.json", "psnr", anchor)
    summary(tmp_path / "b.json", "psnr", test)
    proc = run_cli("bdrate", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    value = float(re.search(r"BD-rate \(psnr, PCHIP, bpp\): ([-+0-9.]+) %", proc.stdout).group(1))
    assert value == pytest.approx(expected, abs=1e-4)
    assert "negative: B needs fewer bits than A" in proc.stdout


@pytest.mark.parametrize("metric,values", [
    ("psnr", [28.0, 30.5, 32.0, 34.5]),
    ("lpips-vgg", [0.31, 0.20, 0.12, 0.07]),
    ("fid", [40.0, 21.0, 9.5, 4.2]),
])
def test_a_codec_needing_90_percent_of_the_bits_is_minus_10_percent_for_any_direction(
        metric, values):
    rates = [0.05, 0.1, 0.2, 0.4]
    anchor = Curve("a", rates, values)
    test = Curve("b", [0.9 * r for r in rates], values)
    result = bd_rate(anchor, test, metric)
    assert result.rate_percent == pytest.approx(-10.0, abs=1e-9)
    # at equal rate the test codec is better: higher PSNR, lower LPIPS / FID
    assert (result.metric_delta > 0) == (metric == "psnr")
    assert bd_rate(test, anchor, metric).rate_percent == pytest.approx(100 / 0.9 - 100)


def test_lpips_alias_and_refusals(tmp_path):
    summary(tmp_path / "a.json", "lpips-vgg", [(0.1, 0.3), (0.2, 0.2), (0.4, 0.1)])
    summary(tmp_path / "b.json", "lpips-vgg", [(0.1, 0.3), (0.2, 0.35), (0.4, 0.1)])
    proc = run_cli("bdrate", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                   "--metric", "lpips")
    assert proc.returncode == 0 and "+0.0000 %" in proc.stdout, proc.stderr
    with pytest.raises(UserError, match="does not improve strictly with rate"):
        bd_rate(load_curve(tmp_path / "a.json", "lpips-vgg"),
                load_curve(tmp_path / "b.json", "lpips-vgg"), "lpips-vgg")
    with pytest.raises(UserError, match="lacks psnr"):
        load_curve(tmp_path / "a.json", "psnr")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(UserError, match="not a summary.json"):
        load_curve(tmp_path / "c.json", "psnr")
    far = Curve("far", [1.0, 2.0], [0.9, 0.8])
    near = Curve("near", [1.0, 2.0], [0.2, 0.1])
    with pytest.raises(UserError, match="do not overlap"):
        bd_rate(far, near, "lpips-vgg")
