"""Files gicl reads that come from elsewhere, opened so that none of them can run code.

1. Third-party pretrained weights.
   LPIPS (VGG16 / AlexNet), DISTS (VGG16) and FID/KID (torch-fidelity's Inception-v3) load
   their backbones through `torch.hub.load_state_dict_from_url`, which unpickles the cached
   file with `weights_only=False`: a pickle planted in `$TORCH_HOME/hub/checkpoints` would run
   code. `verify_hub_weights` therefore opens the file first with `weights_only=True` (only
   tensors and containers; any other pickled global is refused, never called) and compares
   its SHA-256 with the published one — torch.hub's convention, which torchvision and
   torch-fidelity follow, puts the first hex digits of the file's SHA-256 in its name
   (`vgg16-397923af.pth`); only then may the library load the file. A short published prefix
   alone is no defence against a crafted file (32 bits can be matched by brute force), which
   is why the `weights_only` load always comes first.

   Test-only escape: `GICL_TRUST_WEIGHTS_SHA256="<file name>:<sha256>[,...]"` accepts a file
   whose FULL SHA-256 is listed although it is not the published file (the test suite's
   random-weight backbones). It never skips the `weights_only` check, and every use logs that
   the weights are unverified, so numbers computed with them are never taken for LPIPS,
   DISTS or FID.

2. Checkpoints that another code base pickled (`gicl import`).
   A published Lightning checkpoint holds a `state_dict` next to metadata such as pickled
   config objects (OmegaConf, argparse namespaces, callback states). `torch.load(...,
   weights_only=True)` refuses such a file as a whole, and `weights_only=False` would import and
   call whatever the pickle names, which is arbitrary code execution. `read_foreign_checkpoint`
   sits in between: its unpickler materialises tensors and their storages, containers and plain
   values, and turns every other global into an `Inert` placeholder that records the name it
   stood for but is never imported, constructed or called. A `__reduce__` payload therefore
   yields an `Inert` record of the call it asked for instead of running it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import logging
import os
import pickle
import re
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from gicl.errors import UserError

log = logging.getLogger("gicl")

TRUST_ENV = "GICL_TRUST_WEIGHTS_SHA256"
# torch.hub's HASH_REGEX: the SHA-256 prefix between the last '-' and the extension.
_PUBLISHED_PREFIX = re.compile(r"-([a-f0-9]{8,64})\.[a-z]+$")
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_verified: dict[tuple, bool] = {}  # (path, size, mtime, inode) → verified (True) / trusted


class WeightsFileError(UserError):
    """A third-party weights file that is not plain data or not the published file."""


def hub_checkpoints_dir() -> Path:
    """Where torchvision and torch-fidelity look for (and would download) weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def published_sha256_prefix(file_name: str) -> str:
    """The SHA-256 prefix a torch.hub file name publishes (`vgg16-397923af.pth` → 397923af)."""
    match = _PUBLISHED_PREFIX.search(file_name)
    if match is None:
        raise ValueError(f"{file_name} carries no published SHA-256 prefix")
    return match.group(1)


def verify_hub_weights(path: str | os.PathLike, url: str) -> bool:
    """Check a hub weights file before any library unpickles it.

    Returns True for the published file, False for one trusted through `TRUST_ENV` (logged
    as unverified); raises WeightsFileError for a payload, a damaged file or another file.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _verified:
        _load_weights_only(path, url)
        digest = _sha256(path)
        if digest.startswith(published_sha256_prefix(path.name)):
            _verified[key] = True
        elif _trusted(path.name, digest):
            _verified[key] = False
        else:
            raise WeightsFileError(
                f"{path} is not the published file (its SHA-256 is {digest[:16]}..., the "
                f"published one starts {published_sha256_prefix(path.name)}): delete it and "
                f"download {url} again")
    if not _verified[key]:
        log.warning("%s is NOT the published weights file (trusted by $%s): numbers computed "
                    "with it are not the published metric", path, TRUST_ENV)
    return _verified[key]


def refused_global(error: Exception) -> str | None:
    """The pickled global (e.g. `builtins.exec`) a `weights_only` load refused, if that is
    why it failed; None for other failures (a damaged or foreign file)."""
    match = _REFUSED_GLOBAL.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    return match.group(1) if match else None


def _load_weights_only(path: Path, url: str) -> None:
    """Unpickle with `weights_only=True` (memory-mapped when the format allows)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        if (name := refused_global(e)) is not None:
            raise WeightsFileError(
                f"{path} is not a plain weights file: it names `{name}`, which loading it "
                f"would call (it could run code), so gicl refused it; delete it and download "
                f"{url} again") from None
        raise WeightsFileError(f"{path} is damaged or not a weights file "
                               f"({type(e).__name__}): delete it and download {url} again") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _trusted(file_name: str, digest: str) -> bool:
    entries = [e.strip() for e in os.environ.get(TRUST_ENV, "").split(",") if e.strip()]
    return any(e.partition(":")[0] == file_name and e.partition(":")[2].lower() == digest
               for e in entries)

# The globals a checkpoint's tensors and containers need; everything else becomes Inert.
# (Storage types are resolved by torch.load itself before our find_class is asked.)
_TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): __import__("_codecs").encode,  # how protocol 2 pickles bytes
}


class Inert:
    """Stands for a global the file named but that was not loaded: `qualname` says which;
    `args`, `kwargs` and `state` record what the pickle passed to it (themselves loaded by the
    same rules). Calling an Inert only records another Inert."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Inert:
        return _inert_type(f"{self.qualname}(...)")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Inert({self.qualname})"


def _inert_type(qualname: str) -> type[Inert]:
    return types.new_class("Inert", (Inert,), exec_body=lambda ns: ns.update(qualname=qualname))


def _dtypes() -> dict[tuple[str, str], Any]:
    return {("torch", str(d).removeprefix("torch.")): d for d in vars(torch).values()
            if isinstance(d, torch.dtype)}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose `find_class` never imports: allowed globals come from a fixed
    table, all others are fresh `Inert` subclasses."""

    allowed = {**_TENSOR_GLOBALS, **_dtypes()}

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, as pickle itself maps them (protocol 2 writes `__builtin__.set`)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self.allowed.get((module, name))
        return found if found is not None else _inert_type(f"{module}.{name}")


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# what torch.load needs from a `pickle_module`: Unpickler (subclassed for storages) and load
RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="gicl.loading.restricted", Unpickler=RestrictedUnpickler, load=_restricted_load,
)


def read_foreign_checkpoint(path: str | Path) -> Any:
    """Load a torch checkpoint written by other code without running any of its code.

    Tensors come back as tensors (on CPU); any object of another class as an `Inert`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=RESTRICTED_PICKLE)
    except Exception as e:  # torch and pickle raise many types for a file that is not a checkpoint
        raise UserError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})"
                        ) from None


def find_inert(obj: Any, limit: int = 10) -> list[str]:
    """Names of (up to `limit`) placeholders inside nested containers, for reporting."""
    out: list[str] = []
    stack = [obj]
    while stack and len(out) < limit:
        item = stack.pop()
        if isinstance(item, Inert):
            out.append(item.qualname)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return out
