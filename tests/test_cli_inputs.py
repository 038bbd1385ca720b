"""Bad command lines are one line and exit 2, and never harm the input: an output that is
the input, existing outputs under --no-clobber, --device, --bpp, operating points (strictly,
per codec), a directory as the image, and `init:` model files with an invalid codec config."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image
from test_any_size import CODECS, one_thread  # noqa: F401 (autouse fixture)

from gicl.cli import main
from gicl.codecs.base import build_codec
from gicl.model_file import model_payload, save_model_file

SMOKE_PROGIC = {"name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
                "latent_channels": 32, "codebook_size": 64, "attention_blocks": 1}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for name in ("vqgan", "progic", "controlgic"):
        torch.manual_seed(0)
        save_model_file(build_codec(CODECS[name]), folder / f"{name}.pt")
    return folder


@pytest.fixture
def env(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with photo.png and one tiny model file per codec; an isolated model registry."""
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (20, 12), (90, 160, 30)).save(tmp_path / "photo.png")
    for model in models.iterdir():
        shutil.copy(model, tmp_path / model.name)
    return tmp_path


def refused(capsys: pytest.CaptureFixture, *argv: str, match: str) -> None:
    """`gicl ARGV` exits 2 with exactly one line on stderr containing `match`."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gicl: error: ") and match in err, err


def test_compress_onto_its_own_input_is_refused_in_a_real_process(env: Path) -> None:
    photo = env / "photo.png"
    before = digest(photo)
    r = run_cli("compress", str(photo), str(photo), "--ckpt", str(env / "progic.pt"),
                env={"GICL_CACHE": str(env / "cache")})
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "is the input" in r.stderr, r.stderr
    assert digest(photo) == before


def test_outputs_that_are_the_input_by_another_name(env: Path, capsys: pytest.CaptureFixture) -> None:
    photo, model = env / "photo.png", env / "progic.pt"
    before = digest(photo)
    (env / "link.png").symlink_to(photo)
    os.link(photo, env / "hard.png")
    for out in (env / "link.png", env / "hard.png", env / "sub" / ".." / "photo.png"):
        refused(capsys, "compress", str(photo), str(out), "--ckpt", str(model), match="is the input")
    refused(capsys, "compress", str(photo), str(model), "--ckpt", str(model), match="is the input")
    assert digest(photo) == before
    model_before = digest(model)
    refused(capsys, "export", str(model), str(model), match="is the input")
    assert digest(model) == model_before
    assert main(["compress", str(photo), str(env / "a.gic"), "--ckpt", str(model)]) == 0
    (env / "a-link.png").symlink_to(env / "a.gic")
    refused(capsys, "decompress", str(env / "a.gic"), str(env / "a-link.png"), match="is the input")


def test_no_clobber(env: Path, capsys: pytest.CaptureFixture) -> None:
    photo, model = env / "photo.png", env / "progic.pt"
    for out in ("a.gic", "a.png", "m.pt"):
        (env / out).write_bytes(b"keep me")
    refused(capsys, "compress", str(photo), str(env / "a.gic"), "--ckpt", str(model),
            "--no-clobber", match="--no-clobber")
    assert main(["compress", str(photo), str(env / "b.gic"), "--ckpt", str(model),
                 "--no-clobber"]) == 0
    refused(capsys, "decompress", str(env / "b.gic"), str(env / "a.png"), "--no-clobber",
            match="--no-clobber")
    refused(capsys, "export", str(model), str(env / "m.pt"), "--no-clobber", match="--no-clobber")
    assert all((env / out).read_bytes() == b"keep me" for out in ("a.gic", "a.png", "m.pt"))
    # without the flag an existing output is replaced, as before
    assert main(["compress", str(photo), str(env / "a.gic"), "--ckpt", str(model)]) == 0
    assert (env / "a.gic").read_bytes() != b"keep me"


def test_devices_are_checked(env: Path, capsys: pytest.CaptureFixture) -> None:
    photo, model, out = env / "photo.png", env / "progic.pt", env / "o.gic"
    base = ["compress", str(photo), str(out), "--ckpt", str(model)]
    refused(capsys, *base, "--device", "bogus", match="--device expects cpu or cuda[:N]")
    refused(capsys, *base, "--device", "cuda:99", match="--device cuda:99")
    if not torch.cuda.is_available():
        refused(capsys, *base, "--device", "cuda", match="no CUDA device")
    else:
        assert main([*base, "--device", "cuda"]) == 0
        out.unlink()
    (env / "a.gic").write_bytes(b"")
    refused(capsys, "decompress", str(env / "a.gic"), str(env / "a.png"), "--device", "bogus",
            match="--device expects")
    refused(capsys, "eval", "--ckpt", str(model), "--data", str(env), "--out", str(env / "ev"),
            "--metrics", "psnr", "--device", "tpu", match="--device expects")
    assert not out.exists()


@pytest.mark.parametrize("bpp", ["nan", "inf", "-1", "0"])
def test_bpp_must_be_positive_and_finite(bpp: str, env: Path, capsys: pytest.CaptureFixture) -> None:
    refused(capsys, "compress", str(env / "photo.png"), str(env / "o.gic"), "--ckpt",
            str(env / "progic.pt"), f"--bpp={bpp}", match="--bpp must be a positive finite")
    assert not (env / "o.gic").exists()


BAD_POINTS = [
    ("progic", '{"foo": 1}', "unknown key 'foo'"),
    ("progic", '{"stages": 2, "foo": 1}', "unknown key 'foo'"),
    ("progic", '{"stages": NaN}', "non-finite"),
    ("progic", '{"stages": 0}', "integer in 1..5"),
    ("progic", '{"stages": 6}', "integer in 1..5"),
    ("progic", '{"stages": 2.5}', "integer in 1..5"),
    ("progic", "[2]", "JSON object"),
    ("controlgic", '{"ratios": [NaN, 0, 0]}', "non-finite"),
    ("controlgic", '{"ratios": [Infinity, 0, 0]}', "non-finite"),
    ("controlgic", '{"ratios": [0.5, 0.5]}', "summing to 1"),
    ("controlgic", '{"ratios": [1.5, -0.5, 0]}', "non-negative"),
    ("controlgic", '{"ratio": [0.5, 0.4, 0.1]}', "unknown key 'ratio'"),
    ("vqgan", '{"foo": 1}', "unknown key 'foo'"),
    ("vqgan", '{"stages": 1}', "unknown key 'stages'"),
]


@pytest.mark.parametrize(("codec", "point", "match"), BAD_POINTS)
def test_operating_points_are_validated_per_codec(codec: str, point: str, match: str, env: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    refused(capsys, "compress", str(env / "photo.png"), str(env / "o.gic"), "--ckpt",
            str(env / f"{codec}.pt"), "--point", point, match=match)
    assert not (env / "o.gic").exists()


def test_valid_points_still_code_and_eval_points_are_validated(env: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    good = {"progic": '{"stages": 2}', "controlgic": '{"ratios": [0.2, 0.5, 0.3]}', "vqgan": "{}"}
    for codec, point in good.items():
        assert main(["compress", str(env / "photo.png"), str(env / f"{codec}.gic"), "--ckpt",
                     str(env / f"{codec}.pt"), "--point", point]) == 0
    capsys.readouterr()
    refused(capsys, "eval", "--ckpt", str(env / "progic.pt"), "--data", str(env), "--out",
            str(env / "ev"), "--metrics", "psnr", "--points", '[{"stages": 1}, {"stages": NaN}]',
            match="--points: operating point")
    assert not (env / "ev").exists()


def test_a_directory_as_the_image(env: Path, capsys: pytest.CaptureFixture) -> None:
    refused(capsys, "compress", str(env), str(env / "o.gic"), "--ckpt", str(env / "progic.pt"),
            match="is a directory, not an image")


def test_fit_refuses_an_invalid_train_point(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # train_point is an option of the GAN module (Control-GIC trains at a fixed or sampled point)
    refused(capsys, "fit", "--recipe", "controlgic", "--profile", "smoke", "--run-dir",
            str(tmp_path / "run"), "--set", "stages.train.train_point={ratios: [0.5, 0.4, 0.1], foo: 1}",
            match="stages.train.train_point: unknown key 'foo'")


@pytest.mark.parametrize(("change", "match"), [
    ({"codebook_size": 0}, "codec.codebook_size must be a positive integer"),
    ({"foo": 1}, "unknown key 'codec.foo'"),
    ({"beta": float("nan")}, "non-finite"),
])
def test_fit_init_validates_the_stored_codec_config(change: dict, match: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Names and shapes of the weights match the stage's codec; the stored config does not."""
    payload = model_payload(build_codec(SMOKE_PROGIC))
    payload["codec"] = {**payload["codec"], **change}
    torch.save(payload, tmp_path / "init.pt")
    refused(capsys, "fit", "--recipe", "progic", "--profile", "smoke", "--run-dir",
            str(tmp_path / "run"), "--set", f"stages.train.init={tmp_path / 'init.pt'}",
            match=match)
