"""Model EMA for every stage kind: an exponential moving average of the codec's parameters.

    θ_ema ← decay · θ_ema + (1 − decay) · θ        (once per due iteration, after the steps)

Built on timm's `ModelEmaV3` (a deep copy of the codec, updated in place with `lerp_`), with
`exclude_buffers=True`: buffers such as Control-GIC's index frequency table or the CDF tables
of `update()` are built from the raw codec's statistics and are never averaged; the codec
that decodes holds the EMA *parameters* and the raw codec's buffers.

Options (a stage's `ema` key, gicl.recipes.STAGE_DEFAULTS): `decay` (null = off), `start`
(the EMA copies the raw weights after each of iterations 1..start, then averages), `every`
(averages after the iterations that are multiples of it; the decay is per update). Whether
and how it updates depends only on the iteration count, so a resumed run repeats the
uninterrupted one exactly, and every DDP rank — which holds identical raw weights after each
step — holds an identical EMA. The official Control-GIC training keeps such a copy
(LitEma, decay 0.9999, updated after every batch) and infers with the raw weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import Tensor, nn


def unwrapped(codec: nn.Module) -> nn.Module:
    """The codec under torch.compile's wrapper (its parameters and buffers carry no prefix)."""
    return getattr(codec, "_orig_mod", codec)


def build_ema(codec: nn.Module, options: dict[str, Any]) -> ModelEmaV3 | None:
    """The EMA copy of `codec` (None when `decay` is null), frozen: no optimizer or DDP
    reducer ever sees its parameters."""
    if options["decay"] is None:
        return None
    # timm's decay is 0 (a plain copy) while step ≤ update_after_step + 1: with
    # update_after_step = start − 1 and step = the iteration count, iterations 1..start copy
    ema = ModelEmaV3(unwrapped(codec), decay=float(options["decay"]),
                     update_after_step=options["start"] - 1, exclude_buffers=True)
    ema.requires_grad_(False)
    ema.train(codec.training)  # never run; its mode only silences Lightning's eval-mode warning
    return ema


def ema_due(options: dict[str, Any], iteration: int) -> bool:
    """Whether the EMA updates after iteration `iteration` (1-based count of iterations done)."""
    return iteration <= options["start"] or iteration % options["every"] == 0


@torch.no_grad()
def update_ema(ema: ModelEmaV3 | None, codec: nn.Module, options: dict[str, Any], iteration: int) -> None:
    """The update after iteration `iteration`'s optimizer steps, when it is due."""
    if ema is not None and ema_due(options, iteration):
        ema.update(unwrapped(codec), step=iteration)


def ema_info(ema: ModelEmaV3 | None, options: dict[str, Any]) -> dict[str, Any] | None:
    """What a checkpoint records of the EMA: its options and the codec state keys that are
    parameters (the keys `gicl export` takes from the EMA copy; the others are buffers)."""
    if ema is None:
        return None
    names = [name for name, _ in ema.module.named_parameters(remove_duplicate=False)]
    return {"decay": options["decay"], "start": options["start"], "every": options["every"],
            "parameters": names}


def snapshot(codec: nn.Module) -> dict[str, Tensor]:
    """Copies of every parameter and buffer (persistent or not), for `restore`."""
    codec = unwrapped(codec)
    return {name: t.detach().clone() for name, t in [*codec.named_parameters(), *codec.named_buffers()]}


@torch.no_grad()
def restore(codec: nn.Module, saved: dict[str, Tensor]) -> None:
    """Put a `snapshot` back bit for bit. Parameters are copied into (the optimizers hold
    them); buffers are re-assigned, since `update()` may have resized them (CompressAI's
    EntropyBottleneck CDF tables)."""
    codec = unwrapped(codec)
    parameters = dict(codec.named_parameters())
    for name, value in saved.items():
        if name in parameters:
            parameters[name].copy_(value)
        else:
            owner, _, attr = name.rpartition(".")
            setattr(codec.get_submodule(owner), attr, value)


@torch.no_grad()
def use_ema(codec: nn.Module, ema: ModelEmaV3) -> dict[str, Tensor]:
    """Copy the EMA parameters into `codec` (its buffers stay); returns its raw state."""
    saved = snapshot(codec)
    for raw, averaged in zip(unwrapped(codec).parameters(), ema.module.parameters(), strict=True):
        raw.copy_(averaged)
    return saved


@contextmanager
def ema_applied(codec: nn.Module, ema: ModelEmaV3 | None) -> Iterator[None]:
    """Inside: `codec` holds the EMA parameters (no-op without EMA). After: exactly its raw
    state again, whatever ran inside (e.g. `update()` rebuilding tables)."""
    if ema is None:
        yield
        return
    with torch.inference_mode(False):  # Lightning validates in inference mode: keep normal tensors
        saved = use_ema(codec, ema)
    try:
        yield
    finally:
        with torch.inference_mode(False):
            restore(codec, saved)
