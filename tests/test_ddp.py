"""Two CPU processes (gloo DDP) train exactly like one process with the same global batch,
whether they are one node's two processes or two nodes of one process each (loopback)."""

import os
import shutil
import socket
import subprocess
import sys

import torch
from conftest import run_cli
from PIL import Image
from weights import assert_same_updates, initial_state

from gicl.recipes import resolve


def identical_image_shards(tmp_path, kodak):
    """Shards of 8 copies of one crop: every rank's share of a global batch holds the same
    pixels whatever the world size, so the runs differ only in how they are distributed."""
    src = tmp_path / "images"
    src.mkdir()
    crop = Image.open(kodak / "kodim23.png").convert("RGB").crop((300, 100, 364, 164))
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


def test_two_process_ddp_matches_one_process(tmp_path, kodak):
    shards = identical_image_shards(tmp_path, kodak)
    common = common_overrides(shards)
    for devices in (1, 2):
        proc = run_cli("fit", "--recipe", "progic", "--profile", "smoke", "--run-dir",
                       str(tmp_path / f"d{devices}"), "--set", f"trainer.devices={devices}", *common)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if devices == 2:
            assert "Starting with 2 processes" in proc.stderr + proc.stdout
            assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    one = torch.load(tmp_path / "d1/train/checkpoints/last.ckpt", weights_only=True)
    two = torch.load(tmp_path / "d2/train/checkpoints/last.ckpt", weights_only=True)
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


def test_two_nodes_of_one_process_end_with_the_weights_of_one_node_of_two(tmp_path, kodak):
    """`trainer.num_nodes=2`, one process per node, launched as a cluster launcher would (one
    `gicl fit` per node with NODE_RANK, MASTER_ADDR and MASTER_PORT) over loopback, into one
    run dir (a shared file system): the same weights as one node with two processes."""
    common = common_overrides(identical_image_shards(tmp_path, kodak))
    one_node = run_cli("fit", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(tmp_path / "n1"),
                       "--set", "trainer.devices=2", *common)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
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
    a = torch.load(tmp_path / "n1/train/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "n2/train/checkpoints/last.ckpt", weights_only=True)
    assert a["gicl"]["iteration"] == b["gicl"]["iteration"] == 4
    codec = lambda ckpt: {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("codec.")}  # noqa: E731
    assert_same_updates(codec(a), codec(b), initial_state(resolve("progic", "smoke")["codec"]))
