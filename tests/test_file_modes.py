"""Files gicl writes get the permissions `open()` would give them: 0666 minus the umask."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from conftest import run_cli
from PIL import Image

from gicl.atomic import atomic_torch_save, atomic_write_bytes
from gicl.cli import main


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_fit_export_compress_decompress_outputs_are_0644_under_umask_022(tmp_path, monkeypatch):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(image)
    with umask(0o022):
        proc = run_cli("fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(run),
                       "--set", "stages.pretrain.max_steps=2", "--set", "trainer.val_every_n_steps=1000")
        assert proc.returncode == 0, proc.stderr[-3000:]
        stage = run / "pretrain"
        assert main(["export", str(stage / "checkpoints" / "last.ckpt"), str(tmp_path / "model.pt")]) == 0
        assert main(["compress", str(image), str(tmp_path / "photo.gic"),
                     "--ckpt", str(tmp_path / "model.pt")]) == 0
        assert main(["decompress", str(tmp_path / "photo.gic"), str(tmp_path / "out.png"),
                     "--ckpt", str(tmp_path / "model.pt")]) == 0
    written = [stage / "checkpoints" / "last.ckpt", stage / "final.pt", stage / "config.yaml",
               stage / "done", tmp_path / "model.pt", tmp_path / "photo.gic", tmp_path / "out.png"]
    assert {p.name: mode(p) for p in written} == {p.name: "0o644" for p in written}


def test_modes_follow_the_umask_not_a_constant(tmp_path):
    with umask(0o027):
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_torch_save({"x": 1}, tmp_path / "b.pt")
    with umask(0o002):
        atomic_write_bytes(tmp_path / "c.bin", b"x")
    assert [mode(tmp_path / n) for n in ("a.bin", "b.pt", "c.bin")] == ["0o640", "0o640", "0o664"]
