"""Image files ↔ pixels: the one reader behind training, `gicl eval` and `gicl compress`.

Every path that turns an image file into pixels (the training stream and validation
images in `gicl.data`, `gicl eval`, `gicl compress`, `gicl demo`) goes through `decode`,
so a file gives the same pixels everywhere. The rules:

- The header is parsed first (a JPEG's frame header by `jpeg_size`, anything else by PIL,
  lazily) and `max_pixels` is checked before any pixel is decoded, so a decompression bomb
  costs microseconds, not gigabytes. PIL's own global limit is lifted for that call so the
  caller's limit is the only one in force.
- JPEG is decoded by `torchvision.io.decode_jpeg` (faster than PIL, 0.85 vs 1.14 ms per
  500×375 image on a 2-core EPYC), which converts CMYK and grey to RGB, applies the EXIF
  orientation and raises on truncated data.
- 16-bit PNG (grey, grey+alpha, RGB, RGBA) is decoded at full depth by
  `torchvision.io.decode_png` and scaled to 8 bits as round(v / 257), which maps 0 → 0 and
  65535 → 255 exactly: PIL would clip 16-bit grey to white and truncate 16-bit RGB to its
  high byte (⌊v / 256⌋). Other 16/32-bit grey images (`I;16`, `I`, e.g. TIFF) get the same
  round(v / 257). 16-bit colour TIFFs are the exception: PIL reads them as their high byte,
  which is at most one level below round(v / 257); use PNG for exact 16-bit colour.
- Everything else goes through PIL: EXIF orientation via `ImageOps.exif_transpose`,
  palette, CMYK, grey and 1-bit images converted to RGB, the first frame of animations.
- Transparency (an alpha channel, or a palette/grey transparency key) is composited over
  white, because the colour under a transparent pixel is arbitrary; `DecodedImage.
  composited_alpha` says when that changed a pixel, so `gicl compress` can say so.

Reconstructions are written as 8-bit PNG (lossless), quantized by `to_uint8`: clamp to
[0, 1], scale by 255, round half to even (`torch.round`). Every metric is computed on that
quantized image, i.e. on what a user gets from `gicl decompress`.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, decode_png

from gicl.atomic import atomic_write_bytes
from gicl.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
# PIL's own decompression-bomb limit (it refuses images over 2 × MAX_IMAGE_PIXELS).
DEFAULT_MAX_PIXELS = 178_956_970

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WIDE_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WHITE = (255, 255, 255, 255)


class BadImage(Exception):
    """Bytes that cannot become an RGB image; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """rgb: uint8 (3, H, W). composited_alpha: some pixel was not opaque and was blended
    over white."""

    rgb: Tensor
    composited_alpha: bool

    def to_float(self) -> Tensor:
        """(1, 3, H, W) float in [0, 1], the form codecs take."""
        return self.rgb[None].float() / 255


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Encoded image bytes → RGB by the rules of the module docstring, or `BadImage`."""
    size = jpeg_size(data)
    if size is not None:  # the training stream's common case, without PIL's header parse
        _check_pixels(*size, max_pixels)
        return _decode_jpeg(data)
    try:
        with _pil_limit_lifted():
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not an image (no image format PIL knows)") from None
    except Exception as e:  # PIL's format plugins raise many exception types on bad headers
        raise BadImage(f"not an image ({type(e).__name__}: {e})") from None
    _check_pixels(*image.size, max_pixels)
    if image.format == "JPEG":
        return _decode_jpeg(data)
    if image.format == "PNG" and data[:8] == _PNG_SIGNATURE and data[24:25] == b"\x10":
        try:
            wide = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                              mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        except RuntimeError as e:
            raise BadImage(f"corrupt 16-bit PNG ({e})") from None
        return _from_16_bit(wide.numpy())
    try:
        with _pil_limit_lifted():
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except Exception as e:  # truncated or corrupt data surfaces during load/convert
        raise BadImage(f"corrupt {image.format} ({type(e).__name__}: {e})") from None


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise BadImage(f"{w}x{h} pixels exceed max_image_pixels={max_pixels}")


def _decode_jpeg(data: bytes) -> DecodedImage:
    try:
        return DecodedImage(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        mode=ImageReadMode.RGB, apply_exif_orientation=True), False)
    except RuntimeError as e:
        raise BadImage(f"corrupt JPEG ({e})") from None


# JPEG frame-header (SOF) markers: baseline, extended, progressive, lossless, arithmetic.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF})


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (ITU-T T.81 §B.2.2), the size libjpeg
    allocates, found by walking the marker segments before the first scan: 20× faster than
    PIL's header parse, which costs ≈ 5 % of decoding a 500×375 JPEG. None when the bytes
    are not a JPEG this walk is sure about — no SOF before the first scan, a zero height
    (defined later by a DNL marker), or an MPF segment (PIL reads multi-picture files as
    MPO, not JPEG) — and PIL's header parse decides instead."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (w, h) if h and w else None
        if marker == 0xDA or length < 2 or marker == 0xE2 and data[i + 4:i + 8] == b"MPF\x00":
            return None
        i += 2 + length
    return None


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """uint8 RGB (3, H, W) of encoded image bytes (see `decode`)."""
    return decode(data, max_pixels).rgb


def _from_16_bit(wide: np.ndarray) -> DecodedImage:
    """uint16 (C, H, W), C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA → 8-bit RGB over white."""
    v = wide.astype(np.float64)
    composited = False
    if v.shape[0] in (2, 4):
        alpha, v = v[-1:] / 65535, v[:-1]
        composited = bool((alpha < 1).any())
        v = v * alpha + 65535 * (1 - alpha)
    rgb = np.clip(np.rint(v / 257), 0, 255).astype(np.uint8)
    return DecodedImage(_tensor(np.broadcast_to(rgb, (3, *rgb.shape[1:]))), composited)


def _to_rgb(image: Image.Image) -> DecodedImage:
    if image.mode in _WIDE_GREY:
        grey = np.clip(np.rint(np.asarray(image).astype(np.float64) / 257.0), 0, 255)
        return DecodedImage(_tensor(np.broadcast_to(grey.astype(np.uint8), (3, *grey.shape))),
                            False)
    composited = False
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        composited = rgba.getextrema()[3][0] < 255
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    return DecodedImage(_tensor(np.asarray(image.convert("RGB")).transpose(2, 0, 1)), composited)


def _tensor(chw: np.ndarray) -> Tensor:
    """A contiguous uint8 tensor, copied by numpy: no torch kernel runs, so decoding also
    works in a forked process whose parent already used torch's thread pool (an OpenMP pool
    does not survive fork; the embedded sample cache is built by concurrent processes)."""
    return torch.from_numpy(np.ascontiguousarray(chw))


@contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Disable PIL's global bomb check for one call: `max_pixels` is checked instead."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _image_file(path: Path) -> Path:
    """`path` if it is a file; a missing path or a directory is the user's to fix."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an image: pass an image file")
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    return path


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode an image file (see `decode`); unreadable files are a one-line UserError."""
    path = _image_file(Path(path))
    try:
        return decode(path.read_bytes(), max_pixels)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except BadImage as e:
        raise UserError(f"{path} is not a readable image ({e}): pass a PNG, JPEG or other "
                        "image file") from None


def read_image(path: str | Path) -> Tensor:
    """Load an image file as float RGB in [0, 1], shape (1, 3, H, W)."""
    return load_image(path).to_float()


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) as `read_image` returns it (EXIF orientation applied), from the header only."""
    path = _image_file(Path(path))
    try:
        with _pil_limit_lifted(), Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as e:  # PIL's format plugins raise many exception types on bad headers
        raise UserError(f"{path} is not a readable image ({type(e).__name__}): pass a PNG, "
                        "JPEG or other image file") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def to_uint8(x: Tensor) -> Tensor:
    """(1, 3, H, W) float → (H, W, 3) uint8 on the CPU, the exact pixels a PNG will hold."""
    return (x[0].detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8).permute(1, 2, 0)


@functools.cache
def _unit_levels(device: torch.device) -> Tensor:
    """uint8 level → float32 in [0, 1], each entry computed on the CPU as float32(v) / 255,
    copied to `device` once (a copy per batch would wait for the device's queued work)."""
    return torch.arange(256, dtype=torch.float32).div_(255).to(device)


def unit_float(pixels: Tensor) -> Tensor:
    """uint8 pixels (any shape, any device) → float32 in [0, 1], bit for bit the CPU's
    `pixels.float() / 255` on every device. Elsewhere than on the CPU a table look-up: CUDA
    divides a tensor by a Python scalar as a multiplication by its reciprocal, which can
    differ in the last bit. The result is contiguous whatever the input's strides (training
    batches arrive channels-last: `gicl.data.stream`, "Layout"). Float input is returned
    unchanged (validation batches are float)."""
    if pixels.dtype != torch.uint8:
        return pixels
    if pixels.device.type == "cpu":  # the division: 3× faster here than the look-up
        return torch.empty(pixels.shape, dtype=torch.float32).copy_(pixels).div_(255)
    return _unit_levels(pixels.device)[pixels.contiguous().long()]


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


def check_output(output: str | Path, *inputs: str | Path, no_clobber: bool = False) -> None:
    """Before any work: refuse an output that names one of the inputs (the same path, or
    the same file through a link or another spelling), which writing would destroy, and
    with `no_clobber` an output that exists already."""
    out = Path(output)
    for given in inputs:
        src = Path(given)
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            same = os.path.samefile(out, src)
        if same:
            raise UserError(f"output {output} is the input {given}: writing it would replace "
                            "the input; choose another output path")
    if no_clobber and os.path.lexists(out):
        raise UserError(f"{output} exists and --no-clobber was given: choose another output "
                        "or remove the file")


def list_images(directory: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly in `directory`, sorted by name; at most `limit` of them."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"data directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return files[:limit] if limit else files
