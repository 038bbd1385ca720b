"""Data pipeline (imported as gicl.data): WebDataset shards for training, folders for validation.

    from gicl.data import build_train_loader, build_val_loader, sample_shards, DATA_DEFAULTS

Names are imported on first use (PEP 562), so that `gicl.data.config` — the recipe
validator's list of data keys — loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATA_DEFAULTS": "config", "resolve_data_config": "config", "sample_shards": "sample",
    "build_train_loader": "stream", "build_val_loader": "val",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
