"""Reading and writing images as the codecs see them: float RGB in [0, 1], shape (1, 3, H, W).

Reconstructions are written as 8-bit PNG (lossless), quantized by `to_uint8`: clamp to
[0, 1], scale by 255, round half to even (`torch.round`). Every metric is computed on that
quantized image, i.e. on what a user gets from `gicl decompress`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from gicl.atomic import atomic_write_bytes
from gicl.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> Tensor:
    """Load an image file as float RGB in [0, 1], shape (1, 3, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable image ({type(e).__name__}): pass a PNG, "
                        "JPEG or other image file") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable image ({type(e).__name__}): pass a PNG, "
                        "JPEG or other image file") from None


def to_uint8(x: Tensor) -> Tensor:
    """(1, 3, H, W) float → (H, W, 3) uint8 on the CPU, the exact pixels a PNG will hold."""
    return (x[0].detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8).permute(1, 2, 0)


def from_uint8(pixels: Tensor) -> Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float in [0, 1]."""
    return pixels.permute(2, 0, 1)[None].float() / 255


def write_png(path: str | Path, pixels: Tensor) -> None:
    """Write (H, W, 3) uint8 pixels as PNG atomically (no partial file on any error)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"output {path} must end in .png: reconstructions are written "
                        "losslessly as PNG")
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
    write_file(path, buffer.getvalue())


def write_file(path: str | Path, data: bytes) -> None:
    """Write atomically; a path that cannot be written is the user's to fix (one line)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def list_images(directory: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly in `directory`, sorted by name; at most `limit` of them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"data directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return files[:limit] if limit else files
