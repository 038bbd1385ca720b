"""Training crops on uint8 (3, H, W) tensors; randomness comes from the caller's generator.

- `random_crop_flip` (ProGIC §4.1): uniform random crop, horizontal flip with p = 0.5.
- `random_crop`: the same without the flip.
- `center_crop_resize` (Control-GIC's code): resize the shorter side to `crop` (bilinear,
  antialiased), then take the center crop.

Images with a side shorter than `crop` follow the `small_images` policy first: `upscale`
resizes the shorter side to `crop` (bilinear, antialiased); `pad` extends the bottom/right
edges by replicating the border pixels (no invented content, no black bars the codec would
learn); `skip` rejects the image with `BadImage`, so it is counted like a corrupt sample.

Cropping happens before the float conversion so the expensive work is on crop-size uint8.
"""

from __future__ import annotations

import numpy as np
import torchvision.transforms.v2.functional as F
from torch import Tensor

from .decode import BadImage


def train_crop(image: Tensor, *, crop: int, transform: str, small_images: str,
               rng: np.random.Generator) -> Tensor:
    """A (3, crop, crop) uint8 crop of `image` per `transform` and `small_images`.

    Resizing ("shorter side to crop, then crop") is done as "square window of the shorter
    side, then resize to crop × crop": the same pixels, but only the window is resampled, so
    a 10×10000 image upscaled under the `upscale` policy never materialises 256×256000.
    """
    h, w = image.shape[-2:]
    small = min(h, w) < crop
    if small and small_images == "skip":
        raise BadImage(f"{w}x{h} is smaller than the {crop}px crop (small_images=skip)")
    if small and small_images == "pad":
        image = F.pad(image, [0, 0, max(0, crop - w), max(0, crop - h)], padding_mode="edge")
        h, w = image.shape[-2:]
        small = False
    center = transform == "center_crop_resize"
    side = min(h, w) if center or small else crop
    if center:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = image[:, top:top + side, left:left + side]
    if side != crop:
        out = F.resize(out, [crop, crop], antialias=True)
    if transform == "random_crop_flip" and rng.random() < 0.5:
        out = out.flip(-1)
    return out


def center_crop(image: Tensor, size: int) -> Tensor:
    """Center crop to at most size × size (a side shorter than `size` is kept whole)."""
    h, w = image.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[:, top:top + ch, left:left + cw]
