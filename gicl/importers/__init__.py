"""Importers of other code bases' published checkpoints into gicl model files.

`IMPORTERS` maps the name `gicl import NAME` takes to a function
`(checkpoint path, output path, *, ema, with_code_predictors) -> ImportReport` (an
importer refuses an option its checkpoints do not have); each importer reads the file
with `gicl.loading.read_foreign_checkpoint` (no pickled code runs) and maps tensor names
through one documented table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gicl.errors import UserError


@dataclass
class ImportReport:
    """What an import did, for the command to print."""

    out: Path
    fingerprint: str
    loaded: int
    weights: str  # "raw" or "ema"
    unused: dict[str, int] = field(default_factory=dict)  # group of unused tensors -> count
    behaviour: dict[str, object] = field(default_factory=dict)


def _controlgic(ckpt: Path, out: Path, *, ema: bool, with_code_predictors: bool) -> ImportReport:
    from gicl.importers.controlgic import import_checkpoint

    if with_code_predictors:
        raise UserError("--with-code-predictors is for GLC: Control-GIC has no code predictors")
    return import_checkpoint(ckpt, out, ema=ema)


def _glc(ckpt: Path, out: Path, *, ema: bool, with_code_predictors: bool) -> ImportReport:
    from gicl.importers.glc import import_checkpoint

    if ema:
        raise UserError("--ema is for Control-GIC: the authors' GLC checkpoint has one set of weights")
    return import_checkpoint(ckpt, out, with_code_predictors=with_code_predictors)


IMPORTERS: dict[str, Callable[..., ImportReport]] = {"controlgic": _controlgic, "glc": _glc}
