"""`gicl bench memory`: each configuration in a fresh process, peak RSS and times, and with
`--compare-window` the difference between two attention windows' reconstructions."""

from __future__ import annotations

import json

from conftest import run_cli


def test_window_comparison_is_between_one_model_s_reconstructions():
    """A window covering the whole latent is global attention: the two fresh processes must
    build the same weights, so the reconstructions are identical (before the bench seeded
    them, two random models were compared: 20.5 dB, max |Δ| 0.31)."""
    proc = run_cli("bench", "memory", "--recipe", "controlgic", "--profile", "smoke", "--size", "64x64",
                   "--window", "0", "--compare-window", "64", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert [run["window"] for run in r["runs"]] == [0, 64]
    assert r["max_abs_diff"] == 0.0 and r["psnr_between_db"] == float("inf")
    for run in r["runs"]:
        assert run["peak_rss_mb"] >= run["rss_after_build_mb"] > 0
        assert run["compress_s"] > 0 and run["decompress_s"] > 0 and run["bpp"] > 0
