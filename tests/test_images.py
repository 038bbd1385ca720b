"""One image reader: the pixels `gicl compress`, `gicl eval` and the training stream get from
16-bit, palette, CMYK, RGBA and EXIF-rotated files are the same, and the right ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from test_bitstream_progressive import tiny_model

from gicl.cli import main
from gicl.data import build_train_loader
from gicl.data.shards import Item, write_shards
from gicl.data.val import ValImages
from gicl.images import DEFAULT_MAX_PIXELS, decode, image_size, load_image, read_image

SIDE = 8  # square, so the training stream's crop of SIDE is the whole (rotated) image


def png_16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by channel count), written by hand: PIL
    cannot write 16-bit colour PNGs."""
    h, w, c = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def saved(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def rgb_ramp(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def cases() -> dict[str, tuple[bytes, np.ndarray, int]]:
    """name → (file bytes, expected (H, W, 3) uint8 pixels, tolerance)."""
    rng = np.random.default_rng(0)
    out = {}
    grey16 = rng.integers(0, 65536, (SIDE, SIDE, 1), dtype=np.uint16)
    grey16[0, 0], grey16[0, 1] = 65535, 128  # white stays white; 128/257 rounds to 0
    out["16-bit grey png"] = (png_16(grey16), np.repeat(np.rint(grey16 / 257), 3, 2), 0)
    rgb16 = rng.integers(0, 65536, (SIDE, SIDE, 3), dtype=np.uint16)
    out["16-bit rgb png"] = (png_16(rgb16), np.rint(rgb16 / 257), 0)
    rgba16 = np.concatenate([rgb16, rng.integers(0, 65536, (SIDE, SIDE, 1), dtype=np.uint16)], 2)
    a = rgba16[..., 3:] / 65535
    out["16-bit rgba png"] = (png_16(rgba16), np.rint((rgb16 * a + 65535 * (1 - a)) / 257), 0)
    palette = Image.fromarray(rng.integers(0, 4, (SIDE, SIDE), dtype=np.uint8), "L").convert("P")
    colours = [[250, 10, 20], [0, 128, 255], [33, 66, 99], [1, 2, 3]]
    palette.putpalette(sum(colours, []) + [0] * (768 - 12))
    expected_palette = np.array(colours, np.uint8)[np.asarray(palette)]
    out["palette png"] = (saved(palette, "PNG"), expected_palette, 0)
    cmyk = Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 4), dtype=np.uint8), "CMYK")
    out["cmyk tiff"] = (saved(cmyk, "TIFF"), np.asarray(cmyk.convert("RGB")), 0)
    flat_cmyk = Image.new("CMYK", (SIDE, SIDE), (0, 200, 255, 40))  # flat: no JPEG ringing
    out["cmyk jpeg"] = (saved(flat_cmyk, "JPEG", quality=100),
                        np.asarray(flat_cmyk.convert("RGB")), 3)
    rgba = np.concatenate([rgb_ramp(1), rng.integers(0, 256, (SIDE, SIDE, 1), dtype=np.uint8)], 2)
    alpha = rgba[..., 3:] / 255
    out["rgba png"] = (saved(Image.fromarray(rgba, "RGBA"), "PNG"),
                       np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)), 1)
    grey = Image.fromarray(rgb_ramp(2)[..., 0], "L")
    out["grey png"] = (saved(grey, "PNG"), np.repeat(np.asarray(grey)[..., None], 3, 2), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    stored = Image.fromarray(rgb_ramp(3))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(
        saved(stored, "PNG", exif=exif.tobytes())))))
    assert not np.array_equal(upright, np.asarray(stored))
    out["exif-rotated png"] = (saved(stored, "PNG", exif=exif.tobytes()), upright, 0)
    smooth = Image.fromarray(np.repeat(np.linspace(0, 255, SIDE, dtype=np.uint8)[None, :, None],
                                       SIDE, 0).repeat(3, 2))  # left-right ramp: rotation shows
    out["exif-rotated jpeg"] = (saved(smooth, "JPEG", quality=100, exif=exif.tobytes()),
                                np.rot90(np.asarray(smooth), -1), 3)
    return out


def training_pixels(path: Path, tmp: Path) -> np.ndarray:
    """The first crop the training stream makes of a one-image shard (crop = the image)."""
    write_shards([Item(path.name, None, path, path.stat().st_size)], str(tmp / "s-%02d.tar"),
                 total=1, progress=False)
    loader = build_train_loader({"train": str(tmp / "s-{00..00}.tar"), "crop": SIDE,
                                 "transform": "random_crop", "num_workers": 0,
                                 "shuffle_buffer": 0, "resampled": False}, batch_size=1)
    return next(iter(loader))["image"][0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", list(cases()))
def test_compress_eval_and_training_read_the_same_right_pixels(name: str, tmp_path: Path) -> None:
    data, expected, tolerance = cases()[name]
    suffix = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}[name.rsplit(" ", 1)[1]]
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    compress = load_image(path).rgb.permute(1, 2, 0).numpy()  # what `gicl compress` codes
    evaluated = (read_image(path)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    trained = training_pixels(path, tmp_path)
    validated = ValImages([path], crop=None, max_pixels=DEFAULT_MAX_PIXELS)[0]["image"]
    validated = (validated * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert compress.shape == (SIDE, SIDE, 3)
    assert image_size(path) == (SIDE, SIDE)
    for other in (evaluated, trained, validated):
        np.testing.assert_array_equal(other, compress)
    diff = np.abs(compress.astype(int) - expected.astype(int)).max()
    assert diff <= tolerance, f"{name}: max |difference| {diff} from the expected pixels"


def test_sixteen_bit_is_scaled_not_clipped_or_truncated() -> None:
    """round(v / 257), where PIL's own conversion clips 16-bit grey (to white) and
    truncates 16-bit RGB to its high byte."""
    values = np.array([0, 129, 200, 257, 32767, 32896, 65407, 65535], np.uint16)
    want = [0, 1, 1, 1, 127, 128, 255, 255]
    assert np.rint(values / 257).tolist() == want
    grey = png_16(values.reshape(1, -1, 1))
    rgb = png_16(np.stack([values, values[::-1], values], -1)[None])
    assert decode(grey).rgb[0, 0].tolist() == want
    assert decode(rgb).rgb[:, 0].T.tolist() == [[v, u, v] for v, u in zip(want, want[::-1], strict=True)]
    naive_grey = np.asarray(Image.open(io.BytesIO(grey)).convert("RGB"))[0, :, 0].tolist()
    naive_rgb = np.asarray(Image.open(io.BytesIO(rgb)).convert("RGB"))[0, :, 0].tolist()
    assert naive_grey != want and naive_rgb == (values >> 8).tolist() != want


def test_compress_says_when_it_composited_alpha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "m.pt"
    tiny_model(model)
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    see_through = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 3), (10, 20, 30, 100)).save(see_through)
    opaque = tmp_path / "opaque.png"
    Image.new("RGBA", (5, 3), (10, 20, 30, 255)).save(opaque)
    assert main(["compress", str(see_through), str(tmp_path / "a.gic"), "--ckpt", str(model)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gicl: note: ") and "over white" in err, err
    assert main(["compress", str(opaque), str(tmp_path / "b.gic"), "--ckpt", str(model)]) == 0
    assert capsys.readouterr().err == ""


def test_the_data_default_pixel_limit_is_the_readers():
    from gicl.data.config import DATA_DEFAULTS

    assert DATA_DEFAULTS["max_image_pixels"] == DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS
