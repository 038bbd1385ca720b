"""A killed run resumes to exactly the uninterrupted result; an unreadable last.ckpt is
one line; `--restart` starts over. Real `gicl fit` subprocesses, real SIGKILLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli

from gicl.callbacks.checkpoint import AtomicCheckpointIO
from gicl.errors import UserError

# ProGIC smoke: 9 sample images in batches of 2 → 5 batches per epoch. Eight iterations
# cross the epoch boundary at 5; the kills land after the checkpoints of iterations 4
# (epoch 0, right before a validation the uninterrupted run does and the resumed one
# skips) and 6 (epoch 1, so the resumed run must start in the right epoch's order).
STEPS, KILLS = 8, (4, 6)


def fit_args(run_dir: Path, workers: int, ema: float | None = None) -> list[str]:
    return ["fit", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(run_dir),
            "--set", f"stages.train.max_steps={STEPS}", "--set", "trainer.ckpt_every_n_steps=2",
            "--set", f"data.num_workers={workers}",
            "--set", f"stages.train.ema.decay={'null' if ema is None else ema}"]


def killed_after_checkpoint(iteration: int, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "tests/kill_after_checkpoint.py", str(iteration), "--",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == -9, proc.stderr[-3000:]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "train" / "checkpoints" / "last.ckpt", weights_only=True)


# with a model EMA (the second case) the EMA copy, the validation that swaps it in and out,
# and final.pt (the EMA weights) must come out the same too
@pytest.mark.parametrize("workers, ema", [(0, None), (2, 0.9)])
def test_twice_killed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, workers, ema):
    straight = run_cli(*fit_args(tmp_path / "straight", workers, ema))
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "killed"
    for k in KILLS:
        killed_after_checkpoint(k, fit_args(run, workers, ema))
        assert checkpoint(run)["gicl"]["iteration"] == k and not (run / "train" / "done").exists()
    resumed = run_cli(*fit_args(run, workers, ema))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "not resumable" not in resumed.stderr

    a = torch.load(tmp_path / "straight" / "train" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "train" / "final.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    ca, cb = checkpoint(tmp_path / "straight"), checkpoint(run)
    assert ca["gicl"]["iteration"] == cb["gicl"]["iteration"] == STEPS
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    assert [k for k, v in ca["state_dict"].items() if not torch.equal(v, cb["state_dict"][k])] == []
    assert any(k.startswith("ema.module.") for k in ca["state_dict"]) == (ema is not None)
    for opt_a, opt_b in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        for pid, st in opt_a["state"].items():
            assert all(torch.equal(v, opt_b["state"][pid][n]) for n, v in st.items()), pid


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_unreadable_last_ckpt_is_one_line_and_restart_starts_over(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "ran"
    last = run / "pretrain" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": Payload(marker)}, last)
    args = ["fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(run),
            "--set", "stages.pretrain.max_steps=1", "--set", "trainer.val_every_n_steps=1000"]
    proc = run_cli(*args)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("gicl: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot resume from {last}: it is not plain checkpoint data" in errors[0]
    assert "could run code" in errors[0] and "--restart" in errors[0] and not marker.exists()

    proc = run_cli(*args, "--restart")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "pretrain" / "done").is_file() and last.with_name("last.ckpt.bak").is_file()
    assert not marker.exists()

    # a damaged last.ckpt names an older checkpoint that still loads
    good = last.with_name("iteration-1.ckpt")
    good.write_bytes(last.read_bytes())
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"it is damaged or not a checkpoint .*--restart.*"
                                        r"iteration-1.ckpt loads: copy it to last.ckpt"):
        AtomicCheckpointIO().load_checkpoint(last)
    last.write_bytes(b"")
    with pytest.raises(UserError, match="damaged"):
        AtomicCheckpointIO().load_checkpoint(last)
    torch.save({"format": "gicl-model", "state_dict": {}}, last)  # a model file, not a checkpoint
    with pytest.raises(UserError, match=r"not a `gicl fit` training checkpoint \(no optimizer_states"):
        AtomicCheckpointIO().load_checkpoint(last)


def test_global_rngs_at_an_iteration_do_not_depend_on_what_ran_before():
    """Validation or loader start-up between a checkpoint and the next batch draws from the
    global RNGs in an uninterrupted run and not in a resumed one; the reseed makes that moot."""
    import random
    from types import SimpleNamespace

    import numpy as np

    from gicl.callbacks.rng_state import IterationSeed

    def draws(seed: int, iteration: int) -> tuple:
        IterationSeed(seed).on_train_batch_start(None, SimpleNamespace(iteration=iteration), None, 0)
        return torch.rand(4).tolist(), np.random.rand(2).tolist(), random.random()

    first = draws(3, 5)
    torch.rand(100), np.random.rand(7), random.random()  # what a validation run might draw
    assert draws(3, 5) == first
    assert draws(3, 6) != first and draws(4, 5) != first
