"""Shared fixtures: a $TORCH_HOME with random-weight backbones, and the real CLI in a child process."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from forked_cli import Zygote, needs_fresh_interpreter

REPO = Path(__file__).resolve().parents[1]
# Eleven of the 24 Kodak images (public test set, 768×512), committed so that the suite owns
# its data; `gicl data kodak` fetches all 24 for evaluation.
KODAK = REPO / "tests" / "fixtures" / "kodak"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers, one per core of a small CI machine: each worker and
    # the subprocesses it starts keep to one intra-op thread, or four OpenMP teams would spin
    # against each other on two cores. Tests that compare thread counts pick theirs relative
    # to torch.get_num_threads().
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# torchvision file names that lpips / DISTS / FID loaders look for under $TORCH_HOME.
BACKBONES = {
    "vgg16-397923af.pth": "vgg16",
    "alexnet-owt-7be5be79.pth": "alexnet",
}


@pytest.fixture(scope="session")
def random_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose hub cache holds *random* VGG16/AlexNet weights.

    The real loading code paths run against it; numbers computed with it are meaningless
    and never reported as LPIPS/DISTS/FID. Their hashes are not the published ones, so the
    files are listed in gicl's test-only trust variable (see `trust_weights`).
    """
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for file, arch in BACKBONES.items():
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), ckpt / file)
        trust_weights(ckpt / file)
    return home


def trust_weights(path: Path) -> None:
    """Accept this (random, unpublished) weights file for the rest of the session, in this
    process and the subprocesses it starts; `weights_only` loading is still enforced."""
    import hashlib

    from gicl.loading import TRUST_ENV

    entry = f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    os.environ[TRUST_ENV] = ",".join(filter(None, [os.environ.get(TRUST_ENV), entry]))


@pytest.fixture
def torch_home(random_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(random_torch_home))
    return random_torch_home


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "empty_torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def kodak_crop(name: str, box: tuple[int, int, int, int]) -> torch.Tensor:
    """A crop (left, top, right, bottom) of a committed Kodak photo as (1, 3, H, W) in [0, 1]."""
    from gicl.images import read_image

    left, top, right, bottom = box
    return read_image(KODAK / name)[..., top:bottom, left:right].contiguous()


_zygote: Zygote | None = None


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, fresh: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m gicl ARGS` in a child process of its own; returns the completed process.

    The child is forked from a zygote that has imported torch and Lightning already
    (`forked_cli`: the same process semantics, 3-8 s less per call); a call that changes what
    those imports read from the environment (thread counts), or that measures the process
    itself (`fresh`: its peak memory includes the imports), starts a fresh interpreter.
    """
    global _zygote
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if _zygote is None:
        _zygote = Zygote()
        atexit.register(_zygote.close)
    if fresh or needs_fresh_interpreter(full_env, _zygote.env):
        return subprocess.run(
            [sys.executable, "-m", "gicl", *args], cwd=cwd or REPO, env=full_env,
            capture_output=True, text=True, timeout=timeout,
        )
    return _zygote.run(list(args), cwd or REPO, full_env, timeout)


WORD_SLACK_BITS = 64  # 8 bytes per stream: a coder's flush and its rounding to bytes


def assert_hyper_stream_cost(key: str, payload: float, tables: float, rz: float) -> None:
    """A HyperVQ hyper stream of `payload` bits costs its integer tables (0.5 % + 8 bytes),
    and those are the float R_z (1 % + 1 bit: 16-bit CDFs); with every hyper-latent at its
    median the stream is empty and uses no table, whatever R_z says."""
    if payload:
        assert tables <= payload <= 1.005 * tables + WORD_SLACK_BITS, (key, payload, tables)
        assert abs(tables - rz) <= 0.01 * rz + 1, (key, tables, rz)
    else:
        assert tables == 0.0 and rz >= 0.0, (key, tables, rz)


@pytest.fixture
def kodak() -> Path:
    return KODAK
