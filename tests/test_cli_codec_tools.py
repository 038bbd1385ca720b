"""`gicl export / compress / decompress` as real subprocesses: bit-exact round trips on
Kodak, the printed bpp is the file's, and every kind of bad input is one line on stderr,
exit 2, no traceback and no output file."""

from __future__ import annotations

import binascii
import re
import struct
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from PIL import Image
from test_bitstream_progressive import TINY, tiny_model

from gicl import bitstream
from gicl.cli import main
from gicl.codecs.base import build_codec
from gicl.evaluation import codec_io
from gicl.images import read_image, to_uint8
from gicl.model_file import fingerprint, read_model_file


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"GICL_CACHE": str(tmp_path / "cache")}


def assert_user_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gicl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def decompressed_pixels(path: Path) -> torch.Tensor:
    return to_uint8(read_image(path))


def test_round_trip_through_the_cli_is_bit_exact_with_the_library(tmp_path, kodak, env, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("GICL_CACHE", env["GICL_CACHE"])
    model_path = tmp_path / "model.pt"
    tiny_model(model_path)
    model = codec_io.load_model(model_path)
    crops = {"kodim01": (160, 96, 352, 224), "kodim02": (101, 37, 232, 114)}  # 131×77: odd
    for i, (name, box) in enumerate(crops.items()):
        image = tmp_path / f"{name}.png"
        Image.open(kodak / f"{name}.png").crop(box).save(image)
        stream, out = tmp_path / f"{name}.gic", tmp_path / f"{name}_out.png"
        # a real subprocess for the first image; the same CLI in-process for the second
        if i == 0:
            proc = run_cli("compress", str(image), str(stream), "--ckpt", str(model_path),
                           env=env)
            assert proc.returncode == 0, proc.stderr
            stdout = proc.stdout
        else:
            assert main(["compress", str(image), str(stream), "--ckpt", str(model_path)]) == 0
            stdout = capsys.readouterr().out
        x = read_image(image)
        h, w = x.shape[-2:]
        reported = float(re.search(r"([0-9.]+) bpp \(payload", stdout).group(1))
        assert reported == pytest.approx(stream.stat().st_size * 8 / (h * w), abs=1e-6)
        data, encoded = codec_io.encode(model, x, {})
        assert stream.read_bytes() == data
        # no --ckpt: the model is found in the registry by the stream's fingerprint
        if i == 0:
            proc = run_cli("decompress", str(stream), str(out), env=env)
            assert proc.returncode == 0, proc.stderr
        else:
            assert main(["decompress", str(stream), str(out)]) == 0
        with torch.no_grad():
            expected = to_uint8(model.codec.decompress(encoded))
        assert expected.shape == (h, w, 3)
        assert torch.equal(decompressed_pixels(out), expected)


def test_export_of_a_runner_checkpoint_keeps_only_the_codec(tmp_path, env, capsys, monkeypatch):
    monkeypatch.setenv("GICL_CACHE", env["GICL_CACHE"])
    torch.manual_seed(1)
    config = {"name": "vqgan", **TINY}
    codec = build_codec(config)
    ckpt = {
        "state_dict": {**{f"codec.{k}": v for k, v in codec.state_dict().items()},
                       "discriminator.main.0.weight": torch.randn(4, 3, 4, 4),
                       "perceptual.net.lin0.weight": torch.randn(1, 4, 1, 1)},
        "gicl": {"codec": config, "recipe": "vqgan", "stage": "pretrain"},
        "global_step": 20, "epoch": 0, "pytorch-lightning_version": "2.6.6",
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    proc = run_cli("export", str(tmp_path / "last.ckpt"), str(tmp_path / "final.pt"), env=env)
    assert proc.returncode == 0, proc.stderr
    payload = read_model_file(tmp_path / "final.pt")
    state = {k: v.cpu() for k, v in codec.state_dict().items()}
    assert payload["fingerprint"] == fingerprint(codec.config, state)
    assert payload["fingerprint"] in proc.stdout
    assert payload["meta"]["recipe"] == "vqgan" and payload["meta"]["stage"] == "pretrain"
    assert set(payload["state_dict"]) == set(state)
    assert all(torch.equal(payload["state_dict"][k], state[k]) for k in state)
    assert payload["fingerprint"] in (tmp_path / "cache" / "models.json").read_text()
    # an exported model file is itself accepted, and exports to the same weights
    assert main(["export", str(tmp_path / "final.pt"), str(tmp_path / "again.pt")]) == 0
    assert read_model_file(tmp_path / "again.pt")["fingerprint"] == payload["fingerprint"]

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert_main_error(capsys, ["export", str(tmp_path / "notes.txt"), str(tmp_path / "x.pt")],
                      "notes.txt", "weights_only")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    assert_main_error(capsys, ["export", str(tmp_path / "plain.ckpt"), str(tmp_path / "x.pt")],
                      "not a gicl training checkpoint")
    bad = {**ckpt, "state_dict": {"codec.encoder.conv_in.weight": torch.zeros(1)}}
    torch.save(bad, tmp_path / "bad.ckpt")
    assert_main_error(capsys, ["export", str(tmp_path / "bad.ckpt"), str(tmp_path / "x.pt")],
                      "do not match codec config vqgan")
    assert not (tmp_path / "x.pt").exists()


def assert_main_error(capsys, argv: list[str], *fragments: str) -> None:
    """The same CLI in-process (fast): exit code 2 and one line on stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gicl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs_are_one_line_exit_2_and_leave_no_file(tmp_path, kodak, env, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("GICL_CACHE", env["GICL_CACHE"])
    model_path, other_path = tmp_path / "model.pt", tmp_path / "other.pt"
    fp = tiny_model(model_path, seed=0)
    other_fp = tiny_model(other_path, seed=1)
    image = tmp_path / "crop.png"
    Image.open(kodak / "kodim03.png").crop((0, 0, 40, 24)).save(image)
    stream = tmp_path / "s.gic"
    assert main(["compress", str(image), str(stream), "--ckpt", str(model_path)]) == 0
    data = stream.read_bytes()
    out = tmp_path / "out.png"

    # real subprocesses: a missing image, and a stream with a flipped bit
    assert_user_error(run_cli("compress", str(tmp_path / "missing.png"), str(tmp_path / "a.gic"),
                              "--ckpt", str(model_path), env=env), "image not found")
    flipped = tmp_path / "flipped.gic"
    flipped.write_bytes(data[:-3] + bytes([data[-3] ^ 4]) + data[-2:])
    assert_user_error(run_cli("decompress", str(flipped), str(out), env=env),
                      "fails its check")
    # the same CLI in-process for the other kinds
    (tmp_path / "text.png").write_text("hello")
    assert_main_error(capsys, ["compress", str(tmp_path / "text.png"), str(tmp_path / "a.gic"),
                               "--ckpt", str(model_path)], "not a readable image")
    assert not (tmp_path / "a.gic").exists()
    cut = tmp_path / "cut.gic"
    cut.write_bytes(data[:len(data) - 5])
    assert_main_error(capsys, ["decompress", str(cut), str(out)], "truncated")
    assert_main_error(capsys, ["decompress", str(stream), str(out), "--ckpt", str(other_path)],
                      f"written by model {fp[:16]}", other_fp[:16])
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "empty"))
    assert_main_error(capsys, ["decompress", str(stream), str(out)],
                      f"needs model {fp[:16]}", "--ckpt")
    future = tmp_path / "future.gic"
    future.write_bytes(data[:4] + bytes([3]) + data[5:])  # a flipped version is damage
    assert_main_error(capsys, ["decompress", str(future), str(out), "--ckpt", str(model_path)],
                      "header fails its check: the file is corrupted")
    end = bitstream.read(data).header.header_bytes  # a sound header of a later version
    sealed = data[:4] + bytes([3]) + data[5:end - 2]
    future.write_bytes(sealed + struct.pack(">H", binascii.crc_hqx(sealed, 0)) + data[end:])
    assert_main_error(capsys, ["decompress", str(future), str(out), "--ckpt", str(model_path)],
                      "version 3 is not supported")
    assert not out.exists()
    assert bitstream.read(data).header.complete  # the original was fine all along
