"""Two CPU processes (gloo DDP) train exactly like one process with the same global batch,
whether they are one node's two processes or two nodes of one process each (loopback)."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import KODAK, run_cli
from PIL import Image
from weights import assert_same_updates, initial_state

from gicl.recipes import resolve


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """Shards of 8 copies of one crop: every rank's share of a global batch holds the same
    pixels whatever the world size, so the runs differ only in how they are distributed."""
    tmp_path = tmp_path_factory.mktemp("ddp_shards")
    src = tmp_path / "images"
    src.mkdir()
    crop = Image.open(KODAK / "kodim23.png").convert("RGB").crop((300, 100, 364, 164))
    crop.save(src / "img0.png")
    for i in range(1, 8):
        shutil.copy(src / "img0.png", src / f"img{i}.png")
    proc = run_cli("data", "shards", str(src), str(tmp_path / "shards" / "s-%03d.tar"), "--maxcount", "3")
    assert proc.returncode == 0, proc.stderr
    return str(tmp_path / "shards" / "s-{000..002}.tar")


def common_overrides(shards: str) -> list[str]:
    return ["--set", f"data.train={shards}", "--set", "data.transform=center_crop_resize",
              "--set", "stages.train.max_steps=4", "--set", "trainer.val_every_n_steps=1000",
              "--set", "stages.train.loss.disc_start=2",
              # Adam with a large eps steps like SGD: a sum instead of a mean over ranks shows
              "--set", "stages.train.optimizers.codec.eps=1.0",
              "--set", "stages.train.optimizers.codec.lr=0.1",
              "--set", "stages.train.optimizers.disc.eps=1.0"]


def fit_on(shards: str, run_dir: Path, *settings: str) -> subprocess.CompletedProcess:
    proc = run_cli("fit", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(run_dir),
                   *settings, *common_overrides(shards))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def one_node_of_two(shards, tmp_path_factory) -> Path:
    """One node's two processes: the run both tests compare with."""
    run_dir = tmp_path_factory.mktemp("ddp") / "d2"
    proc = fit_on(shards, run_dir, "--set", "trainer.devices=2")
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    return run_dir


def test_two_process_ddp_matches_one_process(shards, one_node_of_two, tmp_path):
    fit_on(shards, tmp_path / "d1", "--set", "trainer.devices=1")
    one = torch.load(tmp_path / "d1/train/checkpoints/last.ckpt", weights_only=True)
    two = torch.load(one_node_of_two / "train/checkpoints/last.ckpt", weights_only=True)
    assert one["gicl"]["iteration"] == two["gicl"]["iteration"] == 4
    codec = lambda ckpt: {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("codec.")}  # noqa: E731
    assert_same_updates(codec(one), codec(two), initial_state(resolve("progic", "smoke")["codec"]))
    usage_one = one["callbacks"]["CodebookUsage"]["totals"]
    usage_two = two["callbacks"]["CodebookUsage"]["totals"]
    assert usage_one.keys() == usage_two.keys() and len(usage_one) == 5
    for name in usage_one:
        assert int(usage_one[name].sum()) > 0
        assert torch.equal(usage_one[name], usage_two[name]), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_end_with_the_weights_of_one_node_of_two(shards, one_node_of_two, tmp_path):
    """`trainer.num_nodes=2`, one process per node, launched as a cluster launcher would (one
    `gicl fit` per node with NODE_RANK, MASTER_ADDR and MASTER_PORT) over loopback, into one
    run dir (a shared file system): the same weights as one node with two processes."""
    common = common_overrides(shards)
    port = _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "gicl", "fit", "--recipe", "progic", "--profile", "smoke", "--run-dir",
         str(tmp_path / "n2"), "--set", "trainer.devices=1", "--set", "trainer.num_nodes=2", *common],
        env={**os.environ, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert "distributed_backend=gloo" in outputs[0][1] and "Starting with 2 processes" in outputs[0][1]
    a = torch.load(one_node_of_two / "train/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "n2/train/checkpoints/last.ckpt", weights_only=True)
    assert a["gicl"]["iteration"] == b["gicl"]["iteration"] == 4
    codec = lambda ckpt: {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("codec.")}  # noqa: E731
    assert_same_updates(codec(a), codec(b), initial_state(resolve("progic", "smoke")["codec"]))
