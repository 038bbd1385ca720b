"""Writing WebDataset shards from image folders, file lists or tar files, plus their manifest.

Shards hold the ORIGINAL encoded bytes (no re-encode: a JPEG re-encode would add its own
artefacts to the data a compression model learns from), one image per sample under its
normalised extension (`jpg`, `png`, ...) and a `json` record with the source path and
class (the image's parent folder: the WordNet id for ImageNet's `train/<wnid>/*.JPEG`,
the inner tar's name for ImageNet's tar-of-tars). Sample keys are running numbers.

The writer shuffles the item order (seeded) so each shard mixes classes; `sample` draws a
seeded subset first (e.g. Control-GIC's 300 K random OpenImages images).

Each shard is written to a temp file and renamed when complete; the manifest
(`<prefix>manifest.json` beside the shards: shard names, sample counts, bytes) is written
last, atomically. On any failure the shards of the run are removed, so a half-built set
never looks valid. The loader finds a manifest by the shard names it lists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webdataset import TarWriter
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys

from gicl.atomic import atomic_write_bytes
from gicl.errors import UserError
from gicl.images import IMAGE_SUFFIXES, BadImage, decode

log = logging.getLogger("gicl.data")

MANIFEST_SUFFIX = "manifest.json"
_EXTENSION = {".jpeg": "jpg", ".tif": "tiff"}
_SHARD_NUMBER = re.compile(r"%(0?\d*)d")


@dataclass(frozen=True, slots=True)
class Item:
    """One source image: where its bytes are (a file, or a byte range of a tar file)."""

    relpath: str
    cls: str | None
    file: Path
    size: int
    offset: int | None = None  # byte offset inside `file` when it is a tar archive

    @property
    def extension(self) -> str:
        suffix = Path(self.relpath).suffix.lower()
        return _EXTENSION.get(suffix, suffix[1:])


def folder_items(root: Path) -> list[Item]:
    """Every image file under `root` (recursive, sorted); class = its parent folder."""
    items = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            rel = path.relative_to(root)
            parent = rel.parent.as_posix()
            items.append(Item(rel.as_posix(), None if parent == "." else parent, path,
                              path.stat().st_size))
    return items


def list_items(root: Path, list_file: Path) -> list[Item]:
    """Images named in `list_file`, one path per line relative to `root` (or absolute).

    A line without a suffix also matches `<line>.jpg` (the OpenImages downloader's
    `split/image_id` lists). Blank lines and lines starting with `#` are ignored.
    """
    try:
        lines = list_file.read_text().splitlines()
    except OSError as e:
        raise UserError(f"cannot read the file list {list_file}: {e.strerror}") from None
    items, missing = [], []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        path = root / line
        if not path.is_file() and not path.suffix and path.with_suffix(".jpg").is_file():
            path = path.with_suffix(".jpg")
        if not path.is_file():
            missing.append(line)
            continue
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        parent = rel.parent.as_posix()
        items.append(Item(rel.as_posix(), None if parent == "." else parent, path,
                          path.stat().st_size))
    if missing:
        raise UserError(f"{len(missing)} file(s) of {list_file} not found under {root}, "
                        f"e.g. {missing[0]!r}: fix the list or SRC")
    return items


def tar_items(tar_paths: list[Path]) -> list[Item]:
    """Images inside uncompressed tar files, including ImageNet's tar of per-class tars.

    Members are located by byte offset so they can be read in any (shuffled) order.
    """
    items = []
    for tar_path in tar_paths:
        try:
            with tarfile.open(tar_path, "r:") as outer:
                for member in outer:
                    if not member.isfile():
                        continue
                    if member.name.lower().endswith(".tar"):
                        inner_file = outer.extractfile(member)
                        with tarfile.open(fileobj=inner_file, mode="r:") as inner:
                            cls = Path(member.name).stem
                            items += [
                                Item(f"{cls}/{m.name}", cls, tar_path, m.size,
                                     member.offset_data + m.offset_data)
                                for m in inner if m.isfile() and _is_image(m.name)]
                    elif _is_image(member.name):
                        parent = Path(member.name).parent.as_posix()
                        items.append(Item(member.name, None if parent == "." else parent,
                                          tar_path, member.size, member.offset_data))
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"cannot read {tar_path} as an uncompressed tar file ({e}); "
                            "extract compressed archives first") from None
    return items


def source_items(src: str, list_file: str | None = None) -> list[Item]:
    """Items of SRC: an image folder (optionally with a file list), or tar file(s)."""
    root = Path(src)
    if list_file is not None:
        if not root.is_dir():
            raise UserError(f"SRC {src} must be the folder the paths in --list are relative to")
        items = list_items(root, Path(list_file))
    elif root.is_dir():
        items = folder_items(root)
    elif src.lower().endswith(".tar"):
        paths = [Path(p) for p in expand_urls(src)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"tar file not found: {missing[0]}")
        items = tar_items(paths)
    else:
        raise UserError(f"SRC {src} is neither an image folder nor a .tar file "
                        "(or a brace pattern of .tar files)")
    if not items:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {src}")
    return items


def select(items: list[Item], sample: int | None, seed: int) -> list[Item]:
    """A seeded random order of `items`, or of a random subset of `sample` of them."""
    rng = random.Random(seed)
    if sample is None:
        return rng.sample(items, len(items))
    if not 0 < sample <= len(items):
        raise UserError(f"--sample {sample} must be between 1 and the {len(items)} images found")
    return rng.sample(items, sample)


def brace_pattern(pattern: str, count: int) -> str:
    """`dir/x-%06d.tar` and 3 shards → `dir/x-{000000..000002}.tar` (for `data.train`)."""
    spec = _SHARD_NUMBER.search(pattern)
    number = spec.group(0)
    return f"{pattern[:spec.start()]}{{{number % 0}..{number % (count - 1)}}}{pattern[spec.end():]}"


def check_pattern(pattern: str) -> None:
    """OUT_PATTERN must number its shards with exactly one printf `%d` (e.g. `%06d`)."""
    if len(_SHARD_NUMBER.findall(pattern)) != 1 or pattern.count("%") != 1:
        raise UserError(f"OUT_PATTERN {pattern!r} must contain exactly one shard number such as "
                        "%06d, e.g. shards/imagenet-%06d.tar")
    if "/" in pattern[_SHARD_NUMBER.search(pattern).end():] or not pattern.endswith(".tar"):
        raise UserError(f"OUT_PATTERN {pattern!r} must end in a file name like name-%06d.tar")


def manifest_path(pattern: str) -> Path:
    """`dir/imagenet-%06d.tar` → `dir/imagenet-manifest.json`."""
    path = Path(pattern)
    prefix = path.name[:_SHARD_NUMBER.search(path.name).start()]
    return path.parent / f"{prefix}{MANIFEST_SUFFIX}"


def write_shards(items: Iterable[Item], pattern: str, *, total: int, maxcount: int = 1000,
                 maxsize: int = 1_000_000_000, progress: bool = True,
                 info: dict[str, Any] | None = None,
                 drop_undecodable: bool = False) -> dict[str, Any]:
    """Write `items` into shards named `pattern % i`; returns the manifest (also written).

    Every image is decoded once by the training reader (`gicl.images.decode`, default pixel
    limit), so files the loader would skip are reported in the manifest's `undecodable`
    (path and reason); `drop_undecodable` leaves them out of the shards."""
    from tqdm import tqdm

    check_pattern(pattern)
    if maxcount < 1 or maxsize < 1:
        raise UserError("--maxcount and --maxsize must be positive")
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    written: list[Path] = []
    undecodable: list[dict[str, str]] = []
    writer: _ShardFile | None = None
    try:
        with _Reader() as reader, tqdm(total=total, unit="img", disable=not progress,
                                       desc="writing shards") as bar:
            for index, item in enumerate(items):
                data = reader.read(item)
                try:
                    decode(data)
                except BadImage as e:
                    undecodable.append({"path": item.relpath, "reason": str(e)})
                    if drop_undecodable:
                        bar.update(1)
                        continue
                if writer is not None and (writer.count >= maxcount
                                           or writer.size + item.size > maxsize):
                    shards.append(writer.close())
                    writer = None
                if writer is None:
                    writer = _ShardFile(Path(pattern % len(shards)))
                    written.append(writer.path)
                writer.add(f"{index:09d}", item, data)
                bar.update(1)
            if writer is not None:
                shards.append(writer.close())
                writer = None
        if not shards:
            raise UserError(f"none of the {len(undecodable)} image(s) can be decoded, e.g. "
                            f"{undecodable[0]['path']} ({undecodable[0]['reason']}): no shards "
                            "written")
        manifest = {
            "format": "gicl-shards/1",
            "pattern": brace_pattern(Path(pattern).name, len(shards)),
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
            "undecodable": undecodable,
            "undecodable_dropped": drop_undecodable,
            **(info or {}),
        }
        atomic_write_bytes(manifest_path(pattern), json.dumps(manifest, indent=1).encode())
        return manifest
    except BaseException:
        if writer is not None:
            writer.abort()
        for path in written:
            path.unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when there is none (or it is not one of ours)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "shards" in manifest else None


def manifest_counts(urls: list[str]) -> list[int] | None:
    """Sample count of each shard from the manifest(s) beside local shards; None if unknown."""
    local = [local_path(u) for u in urls]
    if any(p is None for p in local):
        return None
    known: dict[Path, int] = {}
    for folder in {p.parent for p in local}:
        for candidate in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
            manifest = read_manifest(candidate)
            for shard in (manifest or {}).get("shards", []):
                known[(folder / shard["name"]).resolve()] = int(shard["samples"])
    counts = [known.get(p.resolve()) for p in local]
    return None if any(c is None for c in counts) else counts


def local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        return Path(url[len("file:"):])
    return None if re.match(r"^[a-z][a-z0-9+.-]*:", url) else Path(url)


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


class _Reader:
    """Reads item bytes, keeping tar archives open across items."""

    def __init__(self) -> None:
        self._open: dict[Path, Any] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._open.values():
            f.close()

    def read(self, item: Item) -> bytes:
        try:
            if item.offset is None:
                return item.file.read_bytes()
            if item.file not in self._open:
                self._open[item.file] = open(item.file, "rb")  # noqa: SIM115 (closed in __exit__)
            f = self._open[item.file]
            f.seek(item.offset)
            return f.read(item.size)
        except OSError as e:
            raise UserError(f"cannot read {item.file}: {e.strerror}") from None


class _ShardFile:
    """One shard being written: a temp file renamed to `path` by `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 (closed in close/abort)
        self._tar = TarWriter(self._file, encoder=False, mtime=0)
        self.count = 0
        self.size = 0

    def add(self, key: str, item: Item, data: bytes) -> None:
        meta = {"path": item.relpath, "class": item.cls}
        self._tar.write({"__key__": key, item.extension: data,
                         "json": json.dumps(meta).encode()})
        self.count += 1
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "samples": self.count, "bytes": self.path.stat().st_size}

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._tar.close()
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class TruncatedShard(UserError):
    """A shard that ends early (data.on_truncated_shard: stop)."""


class ShardReader:
    """Reads shards, detecting a truncated tar; `on_truncated` says what then happens.

    A tar ends with an end-of-archive marker (a zero block). A shard cut at a member
    boundary loses it, and Python's tarfile (hence WebDataset) then simply stops: the
    remaining samples would vanish without a word. Each header read is therefore recorded,
    and a shard whose last header read is not the marker is truncated; so is one whose
    member data ends early (which tarfile reports as an error). "skip": the samples before
    the cut are used, the rest of the shard is skipped, a warning names the shard (once per
    shard and process) and `truncated` counts every truncated shard read. "stop":
    `TruncatedShard`, one line naming the shard.
    """

    def __init__(self, on_truncated: str = "skip") -> None:
        self.on_truncated = on_truncated
        self.truncated = 0
        self.truncated_urls: set[str] = set()

    def samples(self, url: str) -> Iterator[dict[str, Any]]:
        """Raw samples (dicts of bytes by extension, plus `__key__`/`__url__`) of one shard."""
        return group_by_keys(self._members(url))

    def _members(self, url: str) -> Iterator[dict[str, Any]]:
        header = _recording_tarinfo()
        count = 0
        stream = gopen(url)
        try:
            with tarfile.open(fileobj=stream, mode="r|*", tarinfo=header) as tar:
                for member in tar:
                    if member.isreg():
                        yield {"fname": member.name, "data": _member_data(tar, member), "__url__": url}
                    count += 1
                    tar.members = []  # stream mode: keep no per-member state
            if not isinstance(header.last_error, tarfile.EOFHeaderError):
                why = ("cut at a member boundary" if isinstance(header.last_error,
                                                               tarfile.EmptyHeaderError)
                       else "its next header is damaged or cut")
                self._truncated(url, f"no end-of-archive marker after {count} member(s): {why}")
        except (tarfile.TarError, EOFError, zlib.error) as e:
            self._truncated(url, f"after {count} member(s): {e}")
        finally:
            stream.close()

    def _truncated(self, url: str, why: str) -> None:
        if self.on_truncated == "stop":
            raise TruncatedShard(f"shard {url} is truncated ({why}): rebuild it with `gicl data "
                                 "shards`, or set data.on_truncated_shard: skip to train on "
                                 "what it holds")
        self.truncated += 1
        if url not in self.truncated_urls:
            self.truncated_urls.add(url)
            log.warning("data: shard %s is truncated (%s); skipping the rest of it (truncated "
                        "shard reads in this process so far: %d; data.on_truncated_shard: stop "
                        "makes this an error)", url, why, self.truncated)


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's bytes, read straight from the stream when they lie there whole: tarfile's
    `extractfile(member).read()` builds a file object per member (≈ 20–40 µs of the 70–110 µs
    a sample took to read here, 2–3 % of a worker's time per image); its next header read
    skips the padding. Sparse members go through tarfile."""
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return tar.extractfile(member).read()
    data = tar.fileobj.read(member.size)
    if len(data) != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def _recording_tarinfo() -> type[tarfile.TarInfo]:
    """A TarInfo class that remembers why the last header read failed: tarfile ends the
    member loop silently on a zero block (the end-of-archive marker), on end of file and
    on a damaged header alike."""

    class Recording(tarfile.TarInfo):
        last_error: Exception | None = None

        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tar)
            except tarfile.HeaderError as e:
                cls.last_error = e
                raise

    return Recording

