"""Third-party weight files (LPIPS VGG16/AlexNet, DISTS, FID/KID Inception) are opened as
plain data and checked against their published SHA-256 before any library unpickles them:
a planted `__reduce__` payload never runs, and every refusal is one line, exit 2."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from test_bitstream_progressive import tiny_model

from gicl.cli import main
from gicl.errors import UserError
from gicl.loading import TRUST_ENV, WeightsFileError, published_sha256_prefix, verify_hub_weights
from gicl.losses.perceptual import perceptual_for_policy

VGG, ALEX = "vgg16-397923af.pth", "alexnet-owt-7be5be79.pth"
INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


class Payload:
    """Unpickling this creates the marker file (a stand-in for any code an attacker runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def plant(home: Path, file: str, marker: Path, how: str = "zip") -> Path:
    """A hostile weights file at the hub path, in the zip, legacy or raw-pickle format."""
    path = home / "hub" / "checkpoints" / file
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"features.0.weight": Payload(marker)}
    if how == "raw":
        path.write_bytes(pickle.dumps(obj, protocol=2))  # 4 fails earlier, as "not weights"
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=how == "zip")
    return path


@pytest.fixture
def eval_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    data = tmp_path / "images"
    data.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(data / "a.png")  # 2 FID patches: the two shifted grids
    tiny_model(tmp_path / "model.pt")
    return tmp_path / "model.pt", data


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gicl: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_the_planted_payload_would_run_if_unpickled(tmp_path):
    marker = tmp_path / "ran"
    path = plant(tmp_path, VGG, marker)
    torch.load(path, weights_only=False)  # what torch.hub.load_state_dict_from_url does
    assert marker.exists()


@pytest.mark.parametrize("metric,file,how", [
    ("lpips-vgg", VGG, "zip"), ("dists", VGG, "legacy"), ("lpips-alex", ALEX, "raw"),
    ("fid", INCEPTION, "zip"), ("kid", INCEPTION, "legacy"),
])
def test_eval_refuses_a_payload_at_each_weights_path(tmp_path, eval_inputs, monkeypatch, capsys,
                                                     metric, file, how):
    model, data = eval_inputs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    marker = tmp_path / "ran"
    path = plant(tmp_path / "home", file, marker, how)
    code = main(["eval", "--ckpt", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--metrics", f"psnr,{metric}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and "could run code" in line
    assert not marker.exists()


def test_eval_and_fit_subprocesses_refuse_the_payload(tmp_path, eval_inputs):
    model, data = eval_inputs
    home, marker = tmp_path / "home", tmp_path / "ran"
    path = plant(home, VGG, marker)
    proc = run_cli("eval", "--ckpt", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                   "--metrics", "psnr,lpips-vgg", env={"TORCH_HOME": str(home)})
    assert proc.returncode == 2 and str(path) in one_error_line(proc.stderr)
    # perceptual: auto must stop on a hostile file, not train on without the term
    proc = run_cli("fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(tmp_path / "run"),
                   "--set", "stages.pretrain.perceptual=auto", "--set", "stages.pretrain.max_steps=1",
                   env={"TORCH_HOME": str(home)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("gicl: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in lines[0] and "could run code" in lines[0]
    assert not marker.exists()


def test_required_policy_refuses_the_payload_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    marker = tmp_path / "ran"
    plant(tmp_path / "home", VGG, marker, "legacy")
    with pytest.raises(WeightsFileError, match="could run code"):
        perceptual_for_policy("required", 1.0)
    assert not marker.exists()


def test_a_file_that_is_not_the_published_one_is_refused_unless_trusted(tmp_path, monkeypatch):
    path = tmp_path / ALEX
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UserError, match=r"is not the published file .* starts 7be5be79\): delete"):
        verify_hub_weights(path, "https://example.org/" + ALEX)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv(TRUST_ENV, f"other.pth:{digest},{ALEX}:{digest}")
    assert verify_hub_weights(path, "u") is False  # accepted, reported as unverified


def test_trust_never_skips_the_weights_only_load(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    path = plant(tmp_path, ALEX, marker)
    monkeypatch.setenv(TRUST_ENV, f"{ALEX}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    with pytest.raises(WeightsFileError, match="could run code"):
        verify_hub_weights(path, "u")
    assert not marker.exists()


def test_a_file_matching_its_published_prefix_is_verified(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    data = tmp_path / "data.pth"
    torch.save({"w": torch.arange(4.0)}, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    path = data.rename(tmp_path / f"tiny-net-{digest[:8]}.pth")
    assert published_sha256_prefix(path.name) == digest[:8]
    assert verify_hub_weights(path, "u") is True
    assert published_sha256_prefix(VGG) == "397923af" and published_sha256_prefix(INCEPTION) == "6726825d"
