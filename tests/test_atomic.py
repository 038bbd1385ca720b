"""Atomic writes: a writer killed mid-write leaves the previous file intact and loadable."""

import os
import signal
import subprocess
import sys
import time

import torch

from gicl.atomic import atomic_torch_save

WRITER = r"""
import sys, torch
from gicl import atomic
# write a large object slowly: os.fsync is made slow so the kill lands mid-write
real_fsync = atomic.os.fsync
def slow_fsync(fd):
    import time; time.sleep(30)
atomic.os.fsync = slow_fsync
atomic.atomic_torch_save({"v": torch.ones(4_000_000)}, sys.argv[1])
"""


def test_kill_during_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"v": torch.zeros(3)}, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.ckpt.tmp-*")) and time.time() < deadline:
        time.sleep(0.05)
    temps = list(tmp_path.glob(".last.ckpt.tmp-*"))
    assert temps, "writer never started its temp file"
    while temps[0].stat().st_size < 16_000_000 and time.time() < deadline:
        time.sleep(0.05)  # the temp file is fully written, the rename has not happened
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["v"], torch.zeros(3))
    # the next write removes the dead writer's temp file and replaces the target
    atomic_torch_save({"v": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(2))
    assert not list(tmp_path.glob(".last.ckpt.tmp-*"))
