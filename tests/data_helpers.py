"""Helpers of the data-pipeline tests: solid-colour images whose crops identify the sample."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from gicl.data.shards import folder_items, write_shards

MAX_SAMPLES = 16


def colour(i: int) -> tuple[int, int, int]:
    """A colour unique to sample i < 16 (red channel 16·i + 8, far from its neighbours)."""
    assert 0 <= i < MAX_SAMPLES
    return 16 * i + 8, 247 - 16 * i, (37 * i) % 256


def identify(images: Tensor) -> list[int]:
    """Sample index of each (3, H, W) crop in a (B, 3, H, W) uint8 batch of solid-colour crops."""
    red = images[:, 0].float().mean(dim=(1, 2))
    return [round((float(r) - 8) / 16) for r in red]


def write_colour(path: Path, i: int, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(i)).save(path)
    return path


def colour_shards(folder: Path, n: int, maxcount: int) -> str:
    """n solid-colour PNGs written into shards of `maxcount`; returns the brace pattern."""
    for i in range(n):
        write_colour(folder / "src" / f"{i:02d}.png", i)
    items = folder_items(folder / "src")
    manifest = write_shards(items, str(folder / "c-%04d.tar"), total=n, maxcount=maxcount,
                            progress=False)
    return str(folder / manifest["pattern"])


def noise_jpeg_shards(folder: Path, n: int, height: int, width: int, maxcount: int) -> str:
    """n noise JPEGs (quality 90, seeded by their number) in shards of `maxcount`; returns
    the brace pattern."""
    src = folder / "src"
    src.mkdir()
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(src / f"{i:02d}.jpg", quality=90)
    manifest = write_shards(folder_items(src), str(folder / "j-%02d.tar"), total=n, maxcount=maxcount,
                            progress=False)
    return str(folder / manifest["pattern"])


def noise_png(path: Path, seed: int, size: int = 16) -> Path:
    """Random-pixel PNG: every crop position and flip gives different pixels."""
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height RGB pixels (and holds none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
