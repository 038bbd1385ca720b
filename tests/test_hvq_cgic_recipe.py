"""recipes/hvq_cgic.yaml end to end: `gicl fit --profile smoke` runs stages A, B, C in a real
subprocess; stage B keeps the backbone bit-for-bit, lowers the file rate, and its model file
round-trips through `gicl compress` / `gicl decompress`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from events import scalars
from PIL import Image

from gicl.cli import main
from gicl.codecs import build_codec
from gicl.data import build_val_loader
from gicl.evaluation import codec_io
from gicl.images import read_image, to_uint8
from gicl.model_file import load_model_file
from gicl.recipes import resolve

KODAK = Path(__file__).parent / "fixtures" / "kodak"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hvq_cgic")
    # stage B (6 iterations) validates once, at its end
    proc = run_cli("fit", "--recipe", "hvq_cgic", "--profile", "smoke", "--run-dir", str(run_dir),
                   "--set", "trainer.val_every_n_steps=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir / "stderr.log").write_text(proc.stderr)
    return run_dir


def photo(box: tuple[int, int, int, int]) -> torch.Tensor:
    img = Image.open(KODAK / "kodim23.png").convert("RGB").crop(box)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


def test_stage_b_keeps_the_backbone_and_lowers_the_file_rate(run):
    a = torch.load(run / "controlgic" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "hyperprior" / "final.pt", weights_only=True)["state_dict"]
    assert a and all(torch.equal(a[k], b[f"backbone.{k}"]) for k in a)  # bit for bit
    assert any(k.startswith("hyperprior.") for k in b)

    trained, _ = load_model_file(run / "hyperprior" / "final.pt")
    x, point = photo((0, 0, 128, 96)), {"ratios": [1.0, 0.0, 0.0]}
    trained_bytes = sum(map(len, trained.compress(x, point).sections))
    backbone = {k: v for k, v in trained.state_dict().items() if k.startswith("backbone.")}
    for seed in range(3):  # the same backbone with an untrained hyperprior: more bytes
        torch.manual_seed(seed)
        fresh = build_codec(trained.config)
        fresh.load_state_dict(backbone, strict=False)
        fresh.update()
        assert trained_bytes < sum(map(len, fresh.eval().compress(x, point).sections))


def test_stage_c_ran_with_the_reduced_learning_rate(run):
    assert (run / "joint" / "done").is_file()
    stages = resolve("hvq_cgic")["stages"]
    a, c = (stages[s]["optimizers"]["codec"]["lr"] for s in ("controlgic", "joint"))
    assert c < a
    assert stages["joint"]["loss"]["rate_ind"] > 0 and stages["joint"]["loss"]["rate_z"] > 0
    assert stages["hyperprior"]["frozen"] == ["backbone"]


def test_stage_b_model_round_trips_through_the_cli(run, tmp_path, capsys, monkeypatch):
    # the CLI in-process (the fit above already ran it as a subprocess): seconds, not tens
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    model = run / "hyperprior" / "final.pt"
    image, stream, out = tmp_path / "odd.png", tmp_path / "odd.gic", tmp_path / "out.png"
    Image.open(KODAK / "kodim23.png").crop((100, 50, 171, 99)).save(image)  # 71×49
    assert main(["compress", str(image), str(stream), "--ckpt", str(model)]) == 0
    point = json.loads(re.search(r"point (\{.*\})", capsys.readouterr().out).group(1))
    assert main(["decompress", str(stream), str(out), "--ckpt", str(model)]) == 0
    codec, _ = load_model_file(model)
    with torch.no_grad():
        expected = to_uint8(codec(read_image(image), point).x_hat.clamp(0, 1))
    assert torch.equal(to_uint8(read_image(out)), expected)


def test_stage_b_validation_compares_file_rates_with_the_static_table(run):
    """The static_baseline callback: the backbone's static-Huffman file bpp of the same
    validation images and points, next to HyperVQ's, in TensorBoard and the stage's log."""
    logged = scalars(run / "hyperprior" / "tb")
    config = resolve("hvq_cgic", "smoke")
    model, payload = load_model_file(run / "hyperprior" / "final.pt")
    backbone = codec_io.Model(model.backbone, "0" * 32, Path())
    images = [batch["image"] for batch in build_val_loader(config["data"])][:1]  # val_batches: 1
    points = model.operating_points()
    for p, point in enumerate(points):
        static = [len(codec_io.encode(backbone, x[None], point)[0]) * 8 / x[0].numel()
                  for batch in images for x in batch]
        (step, value), = logged[f"rd/static_bpp/point{p}"]
        assert step == 6 and value == pytest.approx(sum(static) / len(static), rel=1e-6)
        learned = logged[f"rd/bpp/point{p}"][0][1]
        saving = logged[f"rd/saving_percent/point{p}"][0][1]
        assert saving == pytest.approx(100 * (1 - learned / value), abs=1e-3)
    log = (run / "stderr.log").read_text()
    assert "| point | operating point | learned model, file bpp | static table, file bpp | saving |" in log
