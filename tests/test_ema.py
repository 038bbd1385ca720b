"""Model EMA (a stage's `ema` option): timm's average of the raw weights, kept in
checkpoints, identical on every DDP rank, measured by validation without touching the raw
trajectory, and written by `final.pt` / `gicl export` (the raw weights with `--raw`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli
from test_compat import OLD_RUN, SAME

from gicl.codecs.base import build_codec
from gicl.errors import RecipeError, UserError
from gicl.evaluation.codec_io import codec_from_checkpoint
from gicl.evaluation.file_points import FilePoints
from gicl.model_file import save_model_file
from gicl.recipes import resolve
from gicl.training.context import StageContext
from gicl.training.ema import snapshot, update_ema
from gicl.training.hyperprior import JointRDTraining

DECAY, START, EVERY, STEPS = 0.9, 1, 2, 4


def fit_args(run_dir: Path, *extra: str) -> list[str]:
    """vqgan smoke with EMA: a copy after iteration 1, averages after 2 and 4."""
    return ["fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(run_dir),
            "--set", f"stages.pretrain.max_steps={STEPS}", "--set", "trainer.val_every_n_steps=1000",
            "--set", f"stages.pretrain.ema.decay={DECAY}", "--set", f"stages.pretrain.ema.start={START}",
            "--set", f"stages.pretrain.ema.every={EVERY}", *extra]


def recorded_fit(records: Path, args: list[str]) -> None:
    """`gicl fit` through tests/record_weights.py (raw and EMA parameters per iteration)."""
    proc = subprocess.run([sys.executable, "tests/record_weights.py", str(records), "--", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ema")
    recorded_fit(root / "records", fit_args(root / "run"))
    return root


def test_ema_is_the_average_of_the_raw_weights_on_its_schedule(ema_run):
    records = {n: load(ema_run / "records" / f"rank0-{n}.pt") for n in range(1, STEPS + 1)}
    # iteration 1 ≤ start: a copy; 3 is not a multiple of `every`: no update
    assert all(torch.equal(records[1]["ema"][k], v) for k, v in records[1]["raw"].items())
    assert all(torch.equal(records[3]["ema"][k], v) for k, v in records[2]["ema"].items())
    expected = {k: v.double() for k, v in records[1]["raw"].items()}
    for n in (2, 4):  # θ_ema ← d·θ_ema + (1 − d)·θ, by hand in float64
        expected = {k: DECAY * v + (1 - DECAY) * records[n]["raw"][k].double() for k, v in expected.items()}
        for k, v in expected.items():
            torch.testing.assert_close(records[n]["ema"][k].double(), v, rtol=1e-6, atol=1e-7)
    last = records[STEPS]
    moved = [k for k, v in last["raw"].items() if not torch.equal(v, last["ema"][k])]
    assert len(moved) > len(last["raw"]) // 2  # the average lags the raw weights

    ckpt = load(ema_run / "run" / "pretrain" / "checkpoints" / "last.ckpt")
    assert ckpt["gicl"]["ema"] == {"decay": DECAY, "start": START, "every": EVERY,
                                   "parameters": list(last["raw"])}
    for k, v in last["raw"].items():  # the checkpoint holds both, under their prefixes
        assert torch.equal(ckpt["state_dict"][f"codec.{k}"], v)
        assert torch.equal(ckpt["state_dict"][f"ema.module.{k}"], last["ema"][k])


def test_final_and_export_write_the_ema_weights_and_raw_on_request(ema_run):
    stage = ema_run / "run" / "pretrain"
    ckpt = load(stage / "checkpoints" / "last.ckpt")["state_dict"]
    final = load(stage / "final.pt")
    options = {"decay": DECAY, "start": START, "every": EVERY}
    assert final["meta"]["weights"] == "ema" and final["meta"]["ema"] == options
    out = {}
    for flag in ("", "--raw"):
        path = ema_run / f"export{flag}.pt"
        proc = run_cli("export", str(stage / "checkpoints" / "last.ckpt"), str(path), *[flag] * bool(flag))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[flag] = load(path)
        assert ("raw weights" if flag else "ema weights") in proc.stdout
    ema, raw = out[""], out["--raw"]
    assert ema["meta"]["weights"] == "ema" and raw["meta"]["weights"] == "raw"
    assert ema["meta"]["ema"] == raw["meta"]["ema"] == options
    assert "ema_state_dict" not in ema
    for k, v in ema["state_dict"].items():
        assert torch.equal(v, ckpt[f"ema.module.{k}"]), k
        assert torch.equal(raw["state_dict"][k], ckpt[f"codec.{k}"]), k
        assert torch.equal(final["state_dict"][k], v), k
    assert ema["fingerprint"] == final["fingerprint"] != raw["fingerprint"]


def test_validation_leaves_the_raw_trajectory_bit_identical(ema_run, tmp_path):
    """Validating (EMA weights in, raw weights back) after iterations 2 and 4 changes nothing
    the run trains: raw codec, discriminator, EMA and optimizer states as without it."""
    proc = run_cli(*fit_args(tmp_path / "run", "--set", "trainer.val_every_n_steps=2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    validated = load(tmp_path / "run" / "pretrain" / "checkpoints" / "last.ckpt")
    plain = load(ema_run / "run" / "pretrain" / "checkpoints" / "last.ckpt")
    assert validated["state_dict"].keys() == plain["state_dict"].keys()
    assert [k for k, v in plain["state_dict"].items() if not torch.equal(v, validated["state_dict"][k])] == []
    for a, b in zip(plain["optimizer_states"], validated["optimizer_states"], strict=True):
        for pid, st in a["state"].items():
            assert all(torch.equal(v, b["state"][pid][n]) for n, v in st.items()), pid
    tb = list((tmp_path / "run" / "pretrain" / "tb").glob("events.*"))
    assert tb and any(b"rd/psnr" in f.read_bytes() for f in tb)  # it did validate


def test_two_process_ddp_keeps_the_ema_identical_on_both_ranks(tmp_path):
    recorded_fit(tmp_path / "records", fit_args(tmp_path / "run", "--set", "trainer.devices=2"))
    for n in range(1, STEPS + 1):
        a, b = (load(tmp_path / "records" / f"rank{r}-{n}.pt") for r in (0, 1))
        for kind in ("raw", "ema"):
            assert [k for k, v in a[kind].items() if not torch.equal(v, b[kind][k])] == [], (n, kind)
    last = load(tmp_path / "records" / f"rank0-{STEPS}.pt")
    assert any(not torch.equal(v, last["ema"][k]) for k, v in last["raw"].items())


def test_ema_codec_has_raw_buffers_and_validation_restores_resized_tables(tmp_path):
    """HVQ-CGIC: a frequency table (a buffer counted after the EMA update) and CDF tables that
    `update()` resizes. The decoding codec holds the EMA parameters and the raw buffers; the
    raw state after validation is the one before it, bit for bit and shape for shape."""
    config = resolve("hvq_cgic", "smoke", [f"stages.joint.ema.decay={DECAY}"])
    torch.manual_seed(0)
    codec = build_codec(config["codec"])
    stage = config["stages"]["joint"]
    module = JointRDTraining(codec, stage, None, StageContext(stage="joint"))
    assert module.ema is not None and all(not p.requires_grad for p in module.ema.parameters())
    assert set(module.parameter_sets()) == {"codec", "disc", "aux"}
    ema_ids = {id(p) for p in module.ema.parameters()}
    assert not ema_ids & {id(p) for ps in module.parameter_sets().values() for p in ps}
    with torch.no_grad():  # a "step", the EMA update after it, then the table's flush
        for p in codec.parameters():
            p.add_(torch.randn_like(p))
        update_ema(module.ema, codec, stage["ema"], 1)
        codec.backbone.index_frequencies += torch.arange(codec.backbone.index_frequencies.numel())
    averaged = dict(module.ema.module.named_parameters())
    raw = snapshot(codec)
    cdf = "hyperprior.blocks.fine.bottleneck._quantized_cdf"

    with torch.inference_mode():  # Lightning validates in inference mode
        module.on_validation_start()
        assert all(torch.equal(p, averaged[k]) for k, p in codec.named_parameters())
        points = FilePoints(codec)  # update(): tables of the EMA weights, resized
        assert dict(codec.named_buffers())[cdf].shape != raw[cdf].shape
        row, _ = points.measure(torch.rand(1, 3, 64, 64), codec.operating_points()[0])
        assert row["bpp"] > 0
        module.on_validation_end()
    after = snapshot(codec)
    assert after.keys() == raw.keys()
    assert [k for k, v in raw.items() if not (v.shape == after[k].shape and torch.equal(v, after[k]))] == []
    codec.backbone.index_frequencies += 1  # training goes on: no inference tensor was left behind
    codec.backbone.index_frequencies -= 1

    with module.decoding_weights():
        fp = save_model_file(codec, tmp_path / "final.pt", module.weights_meta())
    final = load(tmp_path / "final.pt")
    assert final["meta"] == {"weights": "ema", "ema": {"decay": DECAY, "start": 0, "every": 1}}
    assert all(torch.equal(final["state_dict"][k], v) for k, v in averaged.items())
    table = final["state_dict"]["backbone.index_frequencies"]
    assert torch.equal(table, raw["backbone.index_frequencies"])
    assert not torch.equal(table, module.ema.module.backbone.index_frequencies)  # the copy's is stale

    # a checkpoint as Lightning writes it (the module's state_dict and its gicl entry)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "last.ckpt")
    exported, meta = codec_from_checkpoint(tmp_path / "last.ckpt")
    assert meta["weights"] == "ema"
    assert save_model_file(exported, tmp_path / "export.pt", meta) == fp
    exported, meta = codec_from_checkpoint(tmp_path / "last.ckpt", raw=True)
    assert meta["weights"] == "raw"
    assert all(torch.equal(p, raw[k]) for k, p in exported.named_parameters())
    with pytest.raises(UserError, match="model file with EMA weights only: pass the training checkpoint"):
        codec_from_checkpoint(tmp_path / "final.pt", raw=True)


@pytest.mark.parametrize("key, value, message", [
    ("decay", "1.0", "decay must be null (no EMA) or a number in (0, 1)"),
    ("decay", "0", "decay must be null"),
    ("decay", "true", "decay must be null"),
    ("start", "-1", "start must be an integer ≥ 0"),
    ("start", "1.5", "start must be an integer ≥ 0"),
    ("every", "0", "every must be an integer ≥ 1"),
])
def test_bad_ema_options_are_one_line_errors(key, value, message):
    with pytest.raises(RecipeError, match="^" + re.escape(f"stages.train.ema.{message}")):
        resolve("progic", "smoke", [f"stages.train.ema.{key}={value}"])
    assert resolve("progic", "smoke", ["stages.train.ema.decay=0.9999"])["stages"]["train"]["ema"] == {
        "decay": 0.9999, "start": 0, "every": 1}


def test_resuming_a_checkpoint_without_ema_with_ema_on_is_one_line(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    proc = run_cli("fit", *SAME, "--set", "stages.pretrain.ema.decay=0.9", "--run-dir", str(run))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("gicl: error:")]
    assert len(errors) == 1 and "written without EMA" in errors[0] and "--run-dir" in errors[0]
