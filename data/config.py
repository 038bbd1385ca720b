"""The recipe's `data` section: its keys, their defaults, and value checks.

`DATA_DEFAULTS` is the single list of keys the recipe validator accepts under `data:`.
`batch_size` is the GLOBAL batch: the runner divides it by the world size and passes the
per-rank value to `build_train_loader`, which therefore ignores the key.
"""

from __future__ import annotations

from typing import Any

from gicl.errors import RecipeError

TRANSFORMS = ("random_crop_flip", "center_crop_resize", "random_crop")
SMALL_IMAGE_POLICIES = ("upscale", "skip", "pad")
TRUNCATED_SHARD_POLICIES = ("skip", "stop")

DATA_DEFAULTS: dict[str, Any] = {
    "train": None,            # shard URL/pattern; None → the embedded sample shards
    "val": None,              # folder of validation images; None → the embedded sample photos
    "val_count": 4,
    "val_crop": 256,          # None → full-size validation images
    "crop": 256,
    "transform": "random_crop_flip",
    "small_images": "upscale",
    "resampled": True,
    "epoch_samples": None,    # global samples per epoch (resampled mode)
    "epoch_fraction": 1.0,    # of the manifest's (or dataset_size's) sample count
    "dataset_size": None,     # sample count of remote shards that have no manifest
    "shuffle_buffer": 1000,
    "num_workers": 2,
    "max_image_pixels": 178_956_970,  # PIL's decompression-bomb limit, gicl.images.DEFAULT_MAX_PIXELS
    "on_truncated_shard": "skip",  # skip: warn, count, use what the shard holds; stop: error
    "batch_size": 16,         # global; read by the runner, not by this package
}


def resolve_data_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with `cfg`; unknown keys and out-of-range values are RecipeErrors."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DATA_DEFAULTS))
    if unknown:
        raise RecipeError(f"unknown data key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(DATA_DEFAULTS)}")
    out = {**DATA_DEFAULTS, **cfg}
    _choice(out, "transform", TRANSFORMS)
    _choice(out, "small_images", SMALL_IMAGE_POLICIES)
    _choice(out, "on_truncated_shard", TRUNCATED_SHARD_POLICIES)
    for key in ("crop", "val_count", "max_image_pixels"):
        _positive_int(out, key)
    for key in ("val_crop", "epoch_samples", "dataset_size"):
        if out[key] is not None:
            _positive_int(out, key)
    for key in ("shuffle_buffer", "num_workers"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 0:
            raise RecipeError(f"data.{key} must be an integer >= 0, got {out[key]!r}")
    fraction = out["epoch_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise RecipeError(f"data.epoch_fraction must be in (0, 1], got {fraction!r}")
    if not isinstance(out["resampled"], bool):
        raise RecipeError(f"data.resampled must be true or false, got {out['resampled']!r}")
    return out


def _choice(cfg: dict[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    if cfg[key] not in allowed:
        raise RecipeError(f"data.{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")


def _positive_int(cfg: dict[str, Any], key: str) -> None:
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecipeError(f"data.{key} must be a positive integer, got {value!r}")
