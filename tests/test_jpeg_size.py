"""The JPEG frame-header walk that replaces PIL's header parse on the decode path: the same
size as PIL on every kind of JPEG Pillow writes, PIL's decision where the walk is unsure, and
the decompression-bomb check kept (a header claiming 40000×40000 costs no pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gicl.images import BadImage, decode, jpeg_size


def jpeg(mode: str = "RGB", size: tuple[int, int] = (37, 21), **save) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(exif=exif.tobytes())


CASES = {
    "baseline": jpeg(), "progressive": jpeg(progressive=True), "optimized": jpeg(optimize=True),
    "grey": jpeg("L"), "cmyk": jpeg("CMYK"), "4:4:4": jpeg(subsampling=0),
    "icc and comment": jpeg(icc_profile=b"\0" * 300, comment=b"hello"),
    "exif rotated": exif_rotated(), "wide": jpeg(size=(1030, 3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_jpeg_size_is_pils_size(name: str) -> None:
    data = CASES[name]
    assert jpeg_size(data) == Image.open(io.BytesIO(data)).size


def test_unsure_bytes_are_left_to_pil() -> None:
    good = CASES["baseline"]
    assert jpeg_size(b"\x89PNG\r\n\x1a\n") is None
    assert jpeg_size(good[:20]) is None  # cut before the frame header
    assert jpeg_size(b"\xff\xd8\xff\xe0 truncated") is None
    sof = good.index(b"\xff\xc0")
    no_height = good[:sof + 5] + b"\0\0" + good[sof + 7:]  # height from a DNL marker
    assert jpeg_size(no_height) is None
    mpf = b"\xff\xd8\xff\xe2\x00\x08MPF\x00" + good[2:]
    assert jpeg_size(mpf) is None


def test_a_jpeg_header_bomb_is_refused_before_decoding() -> None:
    good = CASES["baseline"]
    sof = good.index(b"\xff\xc0")
    bomb = good[:sof + 5] + (40000).to_bytes(2, "big") * 2 + good[sof + 9:]
    assert jpeg_size(bomb) == (40000, 40000)
    with pytest.raises(BadImage, match="40000x40000 pixels exceed max_image_pixels=1000000"):
        decode(bomb, max_pixels=1_000_000)
    assert tuple(decode(good, max_pixels=37 * 21).rgb.shape) == (3, 21, 37)
    with pytest.raises(BadImage, match="exceed"):
        decode(good, max_pixels=37 * 21 - 1)
