"""recipes/hvq_progic.yaml and recipes/hvq_vqgan.yaml end to end: `gicl fit --profile smoke`
runs stages A, B, C in a real subprocess; stage B keeps the backbone bit-for-bit, and its
model decodes its own files (for HVQ-ProGIC every stage prefix) to the reconstruction of the
stage A model at the same operating point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from events import scalars
from PIL import Image

from gicl import bitstream
from gicl.model_file import load_model_file
from gicl.recipes import resolve

KODAK = Path(__file__).parent / "fixtures" / "kodak"
# recipe → (its stage A, the recipe and stage that stage A repeats)
STAGE_A = {"hvq_progic": ("progic", "progic", "train"), "hvq_vqgan": ("vqgan", "vqgan", "pretrain")}


@pytest.fixture(scope="module", params=list(STAGE_A))
def run(request, tmp_path_factory) -> tuple[str, Path]:
    recipe = request.param
    run_dir = tmp_path_factory.mktemp(recipe)
    proc = run_cli("fit", "--recipe", recipe, "--profile", "smoke", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, run_dir


def test_stage_b_keeps_the_backbone_and_decodes_its_reconstructions(run):
    recipe, run_dir = run
    stage_a = run_dir / STAGE_A[recipe][0] / "final.pt"
    a = torch.load(stage_a, weights_only=True)["state_dict"]
    b = torch.load(run_dir / "hyperprior" / "final.pt", weights_only=True)["state_dict"]
    assert a and all(torch.equal(a[k], b[f"backbone.{k}"]) for k in a)  # bit for bit
    assert any(k.startswith("hyperprior.") for k in b)

    backbone, _ = load_model_file(stage_a)
    hvq, _ = load_model_file(run_dir / "hyperprior" / "final.pt")
    img = Image.open(KODAK / "kodim21.png").convert("RGB").crop((10, 20, 91, 69))  # 81×49
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255
    points = hvq.operating_points()  # ProGIC: k stages; VQGAN: one point, one section
    fingerprint = "cd" * 32
    stream = bitstream.read(bitstream.write(hvq.compress(x, points[-1]), fingerprint, points))
    for k, point in enumerate(points, 1):  # the first k sections are point k's file
        with torch.no_grad():
            expected = backbone.eval()(x, point).x_hat
        decoded = hvq.decompress(bitstream.bind(stream.prefix(k), hvq, fingerprint))
        assert torch.equal(decoded, expected), k


def test_stage_c_ran_with_the_reduced_learning_rate(run):
    recipe, run_dir = run
    name, source, source_stage = STAGE_A[recipe]
    assert (run_dir / "joint" / "done").is_file()
    logged = scalars(run_dir / "joint" / "tb")  # the static_baseline callback, registered
    for p in range(len(load_model_file(run_dir / "joint" / "final.pt")[0].operating_points())):
        assert {f"rd/static_bpp/point{p}", f"rd/bpp/point{p}"} <= set(logged), p
    stages = resolve(recipe)["stages"]
    a, c = (stages[s]["optimizers"]["codec"]["lr"] for s in (name, "joint"))
    assert c < a
    assert stages["joint"]["loss"]["rate_ind"] > 0 and stages["joint"]["loss"]["rate_z"] > 0
    assert stages["hyperprior"]["frozen"] == ["backbone"]
    original = resolve(source)  # stage A is that recipe's training, codec and all
    assert stages[name] == {**original["stages"][source_stage], "codec": original["codec"]}
    assert resolve(recipe)["data"] == original["data"]
