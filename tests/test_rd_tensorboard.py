"""RD curves while training: scalars, the RD figure and reconstruction grid land in the
event files, and a real `tensorboard` server on loopback serves the RD series back."""

import csv
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gicl.callbacks.rd_curves import rd_figure, rd_overlay, reconstruction_tiles, tile_label
from gicl.evaluation.codec_io import load_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_smoke_run_serves_rd_curves_over_tensorboard_http(rd_run):
    tb = rd_run["run"] / "train" / "tb"
    events = sorted(tb.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0})
    acc.Reload()
    assert {"rd/curve", "rd/overlay", "rd/reconstructions"} <= set(acc.Tags()["images"])
    assert {f"rd/psnr/point{i}" for i in range(5)} <= set(acc.Tags()["scalars"])

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tb), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 90
        series = get_json(f"{base}/data/plugin/scalars/scalars?run=.&tag=rd%2Fpsnr%2Fpoint4", deadline)
        assert len(series) >= 1 and all(len(row) == 3 for row in series)  # [wall_time, step, value]
        expected = [e.value for e in acc.Scalars("rd/psnr/point4")]
        assert [round(row[2], 4) for row in series] == [round(v, 4) for v in expected]
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout", deadline)
        assert "rate-distortion" in json.dumps(layout)
    finally:
        server.terminate()
        server.wait(timeout=30)


def write_val_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Two textured validation images, one square and one portrait (H, W)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"a.png": (64, 64), "b.png": (64, 48)}
    for name, (h, w) in sizes.items():
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([(x * 4) % 256, (y * 3) % 256, ((x + y) * 2) % 256], -1)
        img = img + rng.integers(0, 30, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
    return sizes


@pytest.fixture(scope="module")
def rd_run(tmp_path_factory) -> dict:
    """One smoke fit of ProGIC validating two own images at iterations 2 and 4 (the last)."""
    root = tmp_path_factory.mktemp("rd")
    sizes = write_val_images(root / "val")
    run = root / "run"
    proc = run_cli("fit", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(run),
                   "--set", f"data.val={root / 'val'}", "--set", "data.val_count=2",
                   "--set", "trainer.val_every_n_steps=2", "--set", "stages.train.max_steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "run": run, "sizes": sizes}


def test_rd_view_plots_file_bpp_of_gicl_compress_with_aligned_steps(rd_run):
    root, run, sizes = rd_run["root"], rd_run["run"], rd_run["sizes"]
    acc = EventAccumulator(str(sorted((run / "train" / "tb").glob("events.out.tfevents.*"))[0]),
                           size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()

    # scalars, figures and the table of a validation carry the same step: the iteration
    image_steps = {t: [e.step for e in acc.Images(t)] for t in ("rd/curve", "rd/overlay",
                                                                  "rd/reconstructions")}
    assert all(steps == [2, 4] for steps in image_steps.values()), image_steps
    rd_scalars = [t for t in tags["scalars"] if t.startswith("rd/")] + ["val/psnr"]
    assert {t: [e.step for e in acc.Scalars(t)] for t in rd_scalars} == dict.fromkeys(rd_scalars, [2, 4])
    assert [e.step for e in acc.Tensors("rd/points/text_summary")] == [2, 4]
    assert {e.step for e in acc.Scalars("train/loss")} == {1, 2, 3, 4}  # iterations done

    # learning rates by optimizer role
    assert {"lr/codec", "lr/disc"} <= set(tags["scalars"])
    assert not [t for t in tags["scalars"] if t.startswith("lr-")]

    # the last validation saw the final weights: its points are the files `gicl compress`
    # writes. `gicl eval` codes every image at every point through the same writer (its
    # bpp: file bytes); one `gicl compress` ties the two together.
    model = run / "train" / "final.pt"
    proc = run_cli("eval", "--ckpt", str(model), "--data", str(root / "val"), "--out",
                   str(root / "eval"), "--points", "all", "--metrics", "psnr", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((root / "eval" / "images.csv").open()))
    assert len(rows) == 5 * len(sizes)
    lowest = load_model(model).codec.operating_points()[0]
    out = root / "a.gic"
    proc = run_cli("compress", str(root / "val" / "a.png"), str(out), "--ckpt", str(model),
                   "--point", json.dumps(lowest), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(r for r in rows if r["image"] == "a.png" and r["tag"] == "p0")
    assert int(row["bytes"]) == out.stat().st_size
    assert float(row["bpp"]) > float(row["payload_bpp"])  # the container is counted
    for i in range(5):
        at_point = [r for r in rows if r["tag"] == f"p{i}"]
        for metric in ("bpp", "psnr"):
            logged = acc.Scalars(f"rd/{metric}/point{i}")[-1].value
            expected = sum(float(r[metric]) for r in at_point) / len(at_point)
            assert logged == pytest.approx(expected, rel=1e-6), (i, metric)


def test_rd_figures_plot_file_bpp_overlay_steps_and_label_tiles():
    import torch

    means = {0: {"bpp": 0.04, "psnr": 20.0, "ms-ssim": 0.8}, 1: {"bpp": 0.09, "psnr": 23.5, "ms-ssim": 0.9}}
    fig = rd_figure(means, 10)
    (psnr_ax, ssim_ax) = fig.axes
    assert list(psnr_ax.lines[0].get_xdata()) == [0.04, 0.09]
    assert list(psnr_ax.lines[0].get_ydata()) == [20.0, 23.5]
    assert psnr_ax.get_ylabel() == "PSNR (dB)" and ssim_ax.get_ylabel() == "MS-SSIM"
    assert psnr_ax.get_xlabel() == "file bpp (container included)"

    later = {p: {**m, "psnr": m["psnr"] + 1} for p, m in means.items()}
    overlay = rd_overlay([(10, means), (20, later), (30, later)], "overlay")
    for ax in overlay.axes:
        assert len(ax.lines) == 3  # one curve per validation step
        alphas = [line.get_alpha() for line in ax.lines]
        assert alphas == sorted(alphas) and alphas[-1] == 1.0 and alphas[0] < 1.0  # older fainter

    images = {"original": torch.rand(1, 3, 16, 16), 0: torch.rand(1, 3, 16, 16)}
    label = tile_label(0, {"bpp": 0.0396, "psnr": 21.234})
    assert label == "point 0: 0.0396 bpp, 21.23 dB"
    tiles = reconstruction_tiles(images, {0: label})
    assert [ax.get_title() for ax in tiles.axes] == ["original", label]


def test_perceptual_metrics_only_with_their_pretrained_weights(tmp_path, monkeypatch):
    from gicl.evaluation.file_points import available_metrics
    from gicl.evaluation.metrics import weights_needed
    from gicl.loading import hub_checkpoints_dir as checkpoints_dir

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no backbone files
    assert available_metrics() == ["psnr", "ms-ssim"]
    checkpoints_dir().mkdir(parents=True)
    (checkpoints_dir() / weights_needed("lpips-alex")[0].name).write_bytes(b"")
    assert available_metrics() == ["psnr", "ms-ssim", "lpips-alex"]
