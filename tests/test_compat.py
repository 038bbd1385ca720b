"""Run dirs written before the recipe schema moved (optimizer/disc_optimizer/
frequency_table_from → optimizers/callbacks) resume, or fail with one clear line.

tests/fixtures/old_run holds `config.yaml` and `checkpoints/last.ckpt` of a vqgan smoke
stage stopped after its 2 iterations, written by gicl before that change (commit aa90015).
"""

import shutil

import torch
from conftest import REPO, run_cli

OLD_RUN = REPO / "tests" / "fixtures" / "old_run"
SAME = ["--recipe", "vqgan", "--profile", "smoke", "--set", "codec.ch_mult=[1]",
        "--set", "codec.z_channels=4", "--set", "codec.embed_dim=4", "--set", "codec.n_embed=16",
        "--set", "stages.pretrain.discriminator.ndf=4", "--set", "stages.pretrain.max_steps=2",
        "--set", "trainer.val_every_n_steps=100"]


def test_old_run_dir_resumes_and_finishes_with_its_weights(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    proc = run_cli("fit", *SAME, "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr
    old = torch.load(OLD_RUN / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    final = torch.load(run / "pretrain" / "final.pt", weights_only=True)
    codec = {k[len("codec."):]: v for k, v in old["state_dict"].items() if k.startswith("codec.")}
    assert final["state_dict"].keys() == codec.keys()
    assert all(torch.equal(final["state_dict"][k], v) for k, v in codec.items())
    assert (run / "pretrain" / "done").read_text().strip() == "2"


def test_old_run_dir_with_another_setting_is_one_line_naming_it(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    proc = run_cli("fit", *SAME, "--set", "stages.pretrain.optimizers.codec.lr=0.5", "--run-dir", str(run))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert "different codec or stage config (stage.optimizers.codec.lr)" in lines[-1]
