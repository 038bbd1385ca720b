"""The runner end to end, as users run it: real subprocesses of `python -m gicl fit`."""

from pathlib import Path

import torch
import yaml
from conftest import REPO, run_cli
from events import scalars
from weights import assert_same_updates, initial_state

from gicl.recipes import resolve

TWO_STAGE = str(REPO / "tests" / "recipes" / "two_stage.yaml")


def fit(run_dir: Path, *extra: str, recipe: str = "vqgan", profile: str = "smoke", env=None):
    proc = run_cli("fit", "--recipe", recipe, "--profile", profile, "--run-dir", str(run_dir),
                   *extra, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_smoke_fit_leaves_checkpoint_events_learns_and_counts_iterations(tmp_path):
    fit(tmp_path, "--set", "stages.pretrain.max_steps=16", "--set", "stages.pretrain.loss.disc_start=3")
    stage = tmp_path / "pretrain"
    assert (stage / "checkpoints" / "last.ckpt").is_file()
    assert (stage / "final.pt").is_file() and (stage / "done").read_text().strip() == "16"
    cfg = yaml.safe_load((stage / "config.yaml").read_text())
    assert cfg["stages"]["pretrain"]["max_steps"] == 16
    tags = scalars(stage / "tb")
    rec = [v for _, v in tags["train/rec"]]
    assert len(rec) == 16
    assert sum(rec[-4:]) / 4 < sum(rec[:4]) / 4  # reconstruction loss went down
    assert any(t.startswith("rd/psnr/") for t in tags)
    # max_steps and disc_start count iterations: one logged step per iteration, exactly 16,
    # the step being the count of iterations done; iterations 1..3 run before disc_start
    d = tags["train/d_loss"]
    assert [s for s, _ in d] == list(range(1, 17))
    assert all(v == 0.0 for s, v in d if s <= 3)
    assert all(v != 0.0 for s, v in d if s > 3)
    ckpt = torch.load(stage / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["gicl"]["iteration"] == 16


def test_two_stages_chain_freeze_and_skip(tmp_path):
    fit(tmp_path, recipe=TWO_STAGE, profile="paper")
    a, b = model_state(tmp_path / "a" / "final.pt"), model_state(tmp_path / "b" / "final.pt")
    frozen = [k for k in a if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    trained = [k for k in a if k.startswith("decoder.") and k.endswith("weight")]
    assert any(not torch.equal(a[k], b[k]) for k in trained)
    stamp = (tmp_path / "b" / "final.pt").stat().st_mtime_ns
    again = fit(tmp_path, recipe=TWO_STAGE, profile="paper")
    assert "stage a: done, skipped" in again.stderr and "stage b: done, skipped" in again.stderr
    assert (tmp_path / "b" / "final.pt").stat().st_mtime_ns == stamp


def test_micro_batches_train_like_the_whole_batch(tmp_path):
    # Adam with a large eps steps like SGD: updates scale with the gradient, so a wrongly
    # scaled or partial accumulation shows, while float noise in near-zero gradients
    # (which plain Adam turns into ±lr steps) does not. Two iterations: the second shows an
    # accumulation that leaks across iterations; at lr 0.1 a third amplifies reduction-order
    # noise to 2e-3 of some updates (AMD EPYC, AVX2), two keep it below 2e-4.
    args = ["--set", "stages.pretrain.max_steps=2", "--set", "stages.pretrain.loss.adv=0.0",
            "--set", "trainer.val_every_n_steps=1000", "--set", "stages.pretrain.optimizers.codec.eps=1.0",
            "--set", "stages.pretrain.optimizers.codec.lr=0.1"]
    fit(tmp_path / "whole", *args)
    fit(tmp_path / "micro", *args, "--set", "stages.pretrain.micro_batches=2")
    a = model_state(tmp_path / "whole/pretrain/final.pt")
    b = model_state(tmp_path / "micro/pretrain/final.pt")
    assert_same_updates(a, b, initial_state(resolve("vqgan", "smoke")["codec"]))
