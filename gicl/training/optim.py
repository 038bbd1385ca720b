"""Optimizers and per-iteration learning-rate schedules from a stage's config."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from gicl.errors import RecipeError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(params: Iterable[nn.Parameter], cfg: dict[str, Any], where: str) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in OPTIMIZERS:
        raise RecipeError(f"{where}.name must be one of {sorted(OPTIMIZERS)}, got '{name}'")
    cfg["betas"] = tuple(cfg["betas"])
    return OPTIMIZERS[name](list(params), **cfg)


def lr_factor(cfg: dict[str, Any], max_steps: int):
    """Multiplier of the base LR at iteration t: linear warm-up, then constant/multistep/cosine.

    ProGIC's "1e-4 → 1e-5 after 1.5 M iterations" is `multistep` with milestones [1500000]
    and gamma 0.1.
    """
    name, warmup = cfg["name"], int(cfg["warmup_steps"])
    milestones, gamma = sorted(int(m) for m in cfg["milestones"]), float(cfg["gamma"])
    if name not in ("constant", "multistep", "cosine"):
        raise RecipeError(f"scheduler.name must be constant, multistep or cosine, got '{name}'")

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        if name == "multistep":
            return gamma ** sum(t >= m for m in milestones)
        if name == "cosine":
            span = max(1, max_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / span)))
        return 1.0

    return factor


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    """Set every param group's LR to its base LR × factor.

    The LR is a pure function of the iteration, set before each step, rather than a torch
    scheduler: with manual optimization the discriminator does not step before
    `disc_start`, and a function of the saved iteration resumes exactly.
    """
    for group in opt.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * factor
