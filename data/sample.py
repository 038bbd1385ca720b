"""The embedded sample data: the colour photographs that ship inside scikit-image.

They let `gicl fit` run anywhere with no download: nine photos (astronaut, cat, coffee,
Hubble field, IHC slide, two motorcycle views, retina, rocket; 300–1000 px), of which only
the files present in skimage's data folder are used (no network access). Synthetic
charts, logos and grey images there are left out. One photo per shard, so resampled shard
draws are uniform over photos and any rank/worker split has shards to spread.

The shards are built once into a cache (`$GICL_CACHE/sample`, default
`~/.cache/gicl/sample`): written into a temp folder beside it and renamed into place, so
concurrent builders (DDP ranks) never see a half-written cache; the loser of the rename
race discards its copy.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from gicl.errors import UserError

from .shards import Item, read_manifest, write_shards

log = logging.getLogger("gicl.data")

SAMPLE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)
_PATTERN = "sample-%06d.tar"
_MANIFEST = "sample-manifest.json"


def sample_photo_paths() -> list[Path]:
    """The sample photos present in scikit-image's data folder, sorted by name."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    paths = [folder / name for name in SAMPLE_PHOTOS if (folder / name).is_file()]
    if not paths:
        raise UserError(f"none of the sample photos ({', '.join(SAMPLE_PHOTOS)}) is in "
                        f"{folder}; reinstall scikit-image or set data.train / data.val")
    return paths


def default_cache_dir() -> Path:
    return Path(os.environ.get("GICL_CACHE", "~/.cache/gicl")).expanduser() / "sample"


def sample_shards(cache_dir: str | Path | None = None) -> str:
    """Shard pattern of the embedded sample photos, building the cache on first use."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manifest = read_manifest(cache / _MANIFEST)
    if manifest is None:
        _build(cache)
        manifest = read_manifest(cache / _MANIFEST)
    log.info("data: using the embedded sample data (%d colour photos from scikit-image, "
             "shards in %s); set data.train for real training", manifest["samples"], cache)
    return str(cache / manifest["pattern"])


def _build(cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}.tmp-"))
    try:
        items = [Item(p.name, None, p, p.stat().st_size) for p in sample_photo_paths()]
        write_shards(items, str(tmp / _PATTERN), total=len(items), maxcount=1, progress=False,
                     info={"source": "scikit-image sample photos"})
        try:
            os.rename(tmp, cache)  # atomic; replaces `cache` only if it is an empty folder
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if read_manifest(cache / _MANIFEST) is None:  # not a concurrent builder's cache
                raise UserError(f"{cache} exists and is not a sample-shard cache: "
                                "choose a new or empty folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def held_out_split(cache_dir: str | Path | None = None) -> tuple[str, Path]:
    """The demo's split of the sample photos: the shard pattern of every photo but the
    last, and the last photo's path, which training on that pattern never sees (shard i
    holds photo i of `sample_photo_paths()`)."""
    pattern = Path(sample_shards(cache_dir))
    manifest = read_manifest(pattern.parent / _MANIFEST)
    photos = sample_photo_paths()
    if manifest["samples"] != len(photos) or len(photos) < 2:
        raise UserError(f"the sample cache {pattern.parent} does not match the {len(photos)} "
                        "sample photos installed (need at least 2): delete it to rebuild it")
    train = pattern.parent / (_PATTERN.split("%")[0] + f"{{{0:06d}..{len(photos) - 2:06d}}}.tar")
    return str(train), photos[-1]
