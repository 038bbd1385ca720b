"""Decoding any PIL mode to RGB, EXIF orientation, and the validation loader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import png_header_bomb
from PIL import Image

from gicl.data import build_val_loader
from gicl.data.decode import BadImage, decode_rgb
from gicl.errors import UserError

LIMIT = 178_956_970


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_of(data: bytes) -> tuple[int, ...]:
    """Colour of the top-left pixel of the decoded image."""
    return tuple(int(v) for v in decode_rgb(data, LIMIT)[:, 0, 0])


def test_every_pil_mode_becomes_rgb() -> None:
    size = (6, 4)
    palette = Image.new("P", size, 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    see_through = palette.copy()
    see_through.info["transparency"] = 1
    wide = Image.fromarray(np.full((4, 6), 0xFFFF, dtype=np.uint16))
    cases = {
        "L": (encode(Image.new("L", size, 77), "PNG"), (77, 77, 77)),
        "LA transparent": (encode(Image.new("LA", size, (77, 0)), "PNG"), (255, 255, 255)),
        "P": (encode(palette, "PNG"), (10, 200, 30)),
        "P transparent": (encode(see_through, "PNG", transparency=1), (255, 255, 255)),
        "RGBA opaque": (encode(Image.new("RGBA", size, (1, 2, 3, 255)), "PNG"), (1, 2, 3)),
        "I;16 white": (encode(wide, "PNG"), (255, 255, 255)),
        "CMYK tiff": (encode(Image.new("CMYK", size, (0, 255, 255, 0)), "TIFF"), (255, 0, 0)),
        "1 bit": (encode(Image.new("1", size, 1), "PNG"), (255, 255, 255)),
    }
    for name, (data, want) in cases.items():
        assert rgb_of(data) == want, name
    assert decode_rgb(cases["L"][0], LIMIT).shape == (3, 4, 6)
    assert decode_rgb(cases["L"][0], LIMIT).dtype == torch.uint8


def red_left_blue_right(fmt: str, orientation: int) -> bytes:
    """16×8 stored image, red left half, blue right half, with an EXIF orientation tag."""
    image = Image.new("RGB", (16, 8), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])  # torchvision path and PIL path
def test_exif_orientation_is_applied(fmt: str) -> None:
    upright = decode_rgb(red_left_blue_right(fmt, 1), LIMIT)
    assert upright.shape == (3, 8, 16)
    rotated = decode_rgb(red_left_blue_right(fmt, 6), LIMIT)  # 6: display rotated 90° CW
    assert rotated.shape == (3, 16, 8)
    top, bottom = rotated[:, 2, 4].tolist(), rotated[:, 13, 4].tolist()
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50, (top, bottom)


def test_header_is_checked_against_the_pixel_limit_before_decoding() -> None:
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode_rgb(data, 5000).shape == (3, 50, 100)
    with pytest.raises(BadImage, match="100x50 pixels exceed max_image_pixels=4999"):
        decode_rgb(data, 4999)
    bomb = png_header_bomb(40000, 40000)
    with pytest.raises(BadImage, match="40000x40000 pixels exceed"):
        decode_rgb(bomb, LIMIT)
    # Above PIL's own limit (2 × 89 M pixels) only the recipe's limit is in force: the header
    # passes, and the missing pixel data is what fails.
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage, match="corrupt PNG"):
        decode_rgb(bomb, 2_000_000_000)
    assert Image.MAX_IMAGE_PIXELS == pil_limit


def test_val_loader_from_embedded_photos_is_deterministic() -> None:
    first = list(build_val_loader({}))
    assert [b["name"] for b in first] == [["astronaut"], ["chelsea"], ["coffee"],
                                          ["hubble_deep_field"]]
    assert all(b["image"].shape == (1, 3, 256, 256) for b in first)
    assert all(0 <= float(b["image"].min()) and float(b["image"].max()) <= 1 for b in first)
    again = list(build_val_loader({"val_count": 2}))
    assert len(again) == 2 and torch.equal(again[1]["image"], first[1]["image"])


def test_val_loader_from_a_folder(tmp_path: Path) -> None:
    Image.new("RGB", (20, 30), (9, 9, 9)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(red_left_blue_right("JPEG", 6))
    (tmp_path / "c.png").write_text("not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    full = list(build_val_loader({"val": str(tmp_path), "val_count": 2, "val_crop": None}))
    assert [tuple(b["image"].shape) for b in full] == [(1, 3, 30, 20), (1, 3, 16, 8)]
    cropped = list(build_val_loader({"val": str(tmp_path), "val_count": 2, "val_crop": 10}))
    assert [tuple(b["image"].shape) for b in cropped] == [(1, 3, 10, 10), (1, 3, 10, 8)]
    assert torch.equal(cropped[1]["image"], full[1]["image"][..., 3:13, :])
    with pytest.raises(UserError, match="c.png"):
        build_val_loader({"val": str(tmp_path), "val_count": 3})
