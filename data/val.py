"""Validation images: a fixed, deterministic list decoded once, served one per batch.

From `data.val` (image files directly in that folder, sorted by name — the same listing as
`gicl eval`) or, when it is None, the embedded sample photos; the first `val_count`.
Each is center-cropped to `val_crop` when set (a side shorter than `val_crop` is kept
whole, never padded), else used at full size. Images are decoded when the loader is built,
so an unreadable validation file is a UserError before training starts, not a crash at
the first validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from gicl.errors import UserError
from gicl.images import list_images

from .config import resolve_data_config
from .decode import BadImage, decode_rgb
from .sample import sample_photo_paths
from .transforms import center_crop


def build_val_loader(cfg: dict[str, Any]) -> DataLoader:
    """DataLoader of {"image": (1, 3, H, W) float32 in [0, 1], "name": [file stem]}."""
    cfg = resolve_data_config(cfg)
    count = cfg["val_count"]
    paths = list_images(cfg["val"], count) if cfg["val"] is not None else (
        sample_photo_paths()[:count])
    return DataLoader(ValImages(paths, crop=cfg["val_crop"], max_pixels=cfg["max_image_pixels"]),
                      batch_size=1, shuffle=False, num_workers=0)


class ValImages(Dataset):
    """Decoded (and cropped) uint8 images; items are {"image": (3, H, W) float, "name": str}."""

    def __init__(self, paths: list[Path], *, crop: int | None, max_pixels: int) -> None:
        self.names = [p.stem for p in paths]
        self.images = []
        for path in paths:
            try:
                image = decode_rgb(path.read_bytes(), max_pixels)
            except BadImage as e:
                raise UserError(f"validation image {path} cannot be used: {e}") from None
            self.images.append(center_crop(image, crop).clone() if crop else image)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i].float().div_(255), "name": self.names[i]}
