"""`gicl eval` writes a self-contained report.html that a real browser renders: every picture
decodes, every plot is there, and a screenshot is saved beside it.

Headless Chromium comes from Debian's package; the test installs it when absent, as the
SLURM test installs its daemons (root, `apt-get`)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess

import pytest
import torch
from conftest import KODAK, run_cli
from PIL import Image

from gicl.codecs import build_codec
from gicl.model_file import save_model_file


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, capture_output=True, env=env).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            done = subprocess.run(install, capture_output=True, text=True, env=env)
            if done.returncode:
                pytest.fail(f"could not install Debian's chromium: {done.stderr[-500:]}")
        found = shutil.which("chromium")
    assert found
    return found


def headless(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=180)


def test_report_renders_every_picture_and_plot_in_chromium(tmp_path):
    model, out = tmp_path / "model.pt", tmp_path / "eval"
    torch.manual_seed(0)  # a tiny ProGIC: one operating point per stage, so the slider has 5
    save_model_file(build_codec({"name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
                                 "latent_channels": 32}), model)
    proc = run_cli("eval", "--ckpt", str(model), "--data", str(KODAK), "--limit", "3",
                   "--crop", "192", "--metrics", "psnr,ms-ssim", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = out / "report.html"
    text = report.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", text)  # nothing fetched: readable offline
    with (out / "images.csv").open() as f:
        assert len({row["tag"] for row in csv.DictReader(f)}) >= 2  # a slider with several points

    dom = headless("--dump-dom", report.as_uri())
    status = re.search(r"id=\"status\">(\d+)/(\d+) pictures loaded, (\d+) plots<", dom.stdout)
    assert status, dom.stdout[-1500:] + dom.stderr[-1500:]
    # 3 originals + 3 decoded views (the slider swaps the decoded picture per point)
    assert status.groups() == ("6", "6", "2")

    shot = out / "report.png"
    done = headless("--screenshot=" + str(shot), "--window-size=1200,1800", report.as_uri())
    assert shot.is_file(), done.stderr[-1500:]
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 1800)
    low, high = image.getextrema()
    assert high - low > 100  # text, plots and photos, not a blank page
