"""The encoded image of a WebDataset sample → RGB uint8 tensor (3, H, W), or `BadImage`.

Training data is untrusted: a shard may hold truncated files, text named `.jpg`, CMYK or
16-bit images, or a header that claims 40000×40000 pixels. Every failure becomes
`BadImage`, which the stream counts and skips instead of crashing a multi-day run. The
pixels come from `gicl.images.decode`, the reader `gicl eval` and `gicl compress` use too,
so a file trains on the same pixels it is evaluated on (its docstring lists the rules:
16-bit, palette, CMYK, EXIF orientation, alpha over white).
"""

from __future__ import annotations

from gicl.images import BadImage, decode_rgb

__all__ = ["IMAGE_KEYS", "BadImage", "decode_rgb", "image_bytes"]

# Sample keys (file extensions inside a shard) that hold an image, in order of preference.
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")


def image_bytes(sample: dict) -> bytes:
    """The encoded image of a WebDataset sample (the first of IMAGE_KEYS present)."""
    for key in IMAGE_KEYS:
        if key in sample:
            return sample[key]
    raise BadImage(f"no image file in sample (keys: {sorted(k for k in sample if k[:2] != '__')})")
