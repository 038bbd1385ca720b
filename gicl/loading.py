"""Reading files from elsewhere: checkpoints that another code base pickled.

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
import pickle
import types
from pathlib import Path
from typing import Any

import torch

from gicl.errors import UserError

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
