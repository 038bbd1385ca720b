"""Importers of other code bases' published checkpoints into gicl model files.

`IMPORTERS` maps the name `gicl import NAME` takes to a function
`(checkpoint path, output path, *, ema) -> ImportReport`; each importer reads the file
with `gicl.loading.read_foreign_checkpoint` (no pickled code runs) and maps tensor names
through one documented table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportReport:
    """What an import did, for the command to print."""

    out: Path
    fingerprint: str
    loaded: int
    weights: str  # "raw" or "ema"
    unused: dict[str, int] = field(default_factory=dict)  # group of unused tensors -> count
    behaviour: dict[str, object] = field(default_factory=dict)


def _controlgic(ckpt: Path, out: Path, *, ema: bool) -> ImportReport:
    from gicl.importers.controlgic import import_checkpoint

    return import_checkpoint(ckpt, out, ema=ema)


IMPORTERS: dict[str, Callable[..., ImportReport]] = {"controlgic": _controlgic}
