"""Data pipeline (imported as gicl.data): WebDataset shards for training, folders for validation.

    from gicl.data import build_train_loader, build_val_loader, sample_shards, DATA_DEFAULTS
"""

from .config import DATA_DEFAULTS, resolve_data_config
from .sample import sample_shards
from .stream import build_train_loader
from .val import build_val_loader

__all__ = [
    "DATA_DEFAULTS", "build_train_loader", "build_val_loader", "resolve_data_config",
    "sample_shards",
]
