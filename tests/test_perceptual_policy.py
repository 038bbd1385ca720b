"""LPIPS weights policy: required fails naming the file, auto trains without and says so,
and the real loading path runs with (random) weights placed in $TORCH_HOME."""

import yaml
from conftest import run_cli
from events import scalars


def smoke(run_dir, policy, home):
    return run_cli("fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(run_dir),
                   "--set", f"stages.pretrain.perceptual={policy}",
                   "--set", "stages.pretrain.max_steps=2", env={"TORCH_HOME": str(home)})


def test_required_without_weights_exits_2_naming_the_file(tmp_path, empty_torch_home):
    proc = smoke(tmp_path / "run", "required", empty_torch_home)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("gicl: error:")]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert str(empty_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth") in err[0]


def test_auto_without_weights_trains_without_the_term(tmp_path, empty_torch_home):
    proc = smoke(tmp_path / "run", "auto", empty_torch_home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training WITHOUT the LPIPS term" in proc.stderr
    cfg = yaml.safe_load((tmp_path / "run" / "pretrain" / "config.yaml").read_text())
    assert cfg["runtime"]["perceptual"].startswith("disabled")
    assert "train/lpips_loss" not in scalars(tmp_path / "run" / "pretrain" / "tb")


def test_required_with_weights_runs_the_real_lpips(tmp_path, torch_home):
    proc = smoke(tmp_path / "run", "required", torch_home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "run" / "pretrain" / "config.yaml").read_text())
    assert cfg["runtime"]["perceptual"].startswith("on, with UNVERIFIED backbone weights")
    assert len(scalars(tmp_path / "run" / "pretrain" / "tb")["train/lpips_loss"]) == 2
