"""recipes/hvq_progic.yaml end to end: `gicl fit --profile smoke` runs stages A, B, C in a
real subprocess; stage B keeps the backbone bit-for-bit, and its model decodes every prefix
of its own files to the ProGIC stage-k reconstruction of the stage A model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from gicl import bitstream
from gicl.model_file import load_model_file
from gicl.recipes import resolve

KODAK = Path(__file__).parent / "fixtures" / "kodak"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("hvq_progic")
    proc = run_cli("fit", "--recipe", "hvq_progic", "--profile", "smoke", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_stage_b_keeps_the_backbone_and_decodes_progics_prefixes(run):
    a = torch.load(run / "progic" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "hyperprior" / "final.pt", weights_only=True)["state_dict"]
    assert a and all(torch.equal(a[k], b[f"backbone.{k}"]) for k in a)  # bit for bit
    assert any(k.startswith("hyperprior.") for k in b)

    progic, _ = load_model_file(run / "progic" / "final.pt")
    hvq, _ = load_model_file(run / "hyperprior" / "final.pt")
    img = Image.open(KODAK / "kodim21.png").convert("RGB").crop((10, 20, 91, 69))  # 81×49
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255
    n = progic.num_stages
    fingerprint = "cd" * 32
    stream = bitstream.read(bitstream.write(hvq.compress(x, {"stages": n}), fingerprint,
                                            hvq.operating_points()))
    for k in range(1, n + 1):
        with torch.no_grad():
            expected = progic.eval()(x, {"stages": k}).x_hat
        decoded = hvq.decompress(bitstream.bind(stream.prefix(k), hvq, fingerprint))
        assert torch.equal(decoded, expected), k


def test_stage_c_ran_with_the_reduced_learning_rate(run):
    assert (run / "joint" / "done").is_file()
    stages = resolve("hvq_progic")["stages"]
    a, c = (stages[s]["optimizers"]["codec"]["lr"] for s in ("progic", "joint"))
    assert c < a
    assert stages["joint"]["loss"]["rate_ind"] > 0 and stages["joint"]["loss"]["rate_z"] > 0
    assert stages["hyperprior"]["frozen"] == ["backbone"]
    progic = resolve("progic")  # stage A is recipes/progic.yaml's training, codec and all
    assert stages["progic"] == {**progic["stages"]["train"], "codec": progic["codec"]}
    assert resolve("hvq_progic")["data"] == progic["data"]
