"""Optimizers and per-iteration learning-rate schedules from a stage's config.

Both are looked up by name in gicl.registry (OPTIMIZERS, SCHEDULERS), so a plugin adds one
with a single `register` call. A scheduler is a function (iteration, config, max_steps) →
factor of the base learning rate, after the linear warm-up that every schedule shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from gicl.registry import OPTIMIZERS, SCHEDULERS


def build_optimizer(params: Iterable[nn.Parameter], cfg: dict[str, Any], where: str) -> torch.optim.Optimizer:
    cfg = dict(cfg)
    cls = OPTIMIZERS.load(cfg.pop("name"), f"{where}.name")
    cfg["betas"] = tuple(cfg["betas"])
    return cls(list(params), **cfg)


def constant(t: int, cfg: dict[str, Any], max_steps: int) -> float:
    return 1.0


def multistep(t: int, cfg: dict[str, Any], max_steps: int) -> float:
    """× gamma at each milestone passed. ProGIC's "1e-4 → 1e-5 after 1.5 M iterations" is
    milestones [1500000], gamma 0.1."""
    return float(cfg["gamma"]) ** sum(t >= int(m) for m in cfg["milestones"])


def cosine(t: int, cfg: dict[str, Any], max_steps: int) -> float:
    """Half a cosine from 1 after the warm-up to 0 at max_steps."""
    warmup = int(cfg["warmup_steps"])
    span = max(1, max_steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / span)))


def lr_factor(cfg: dict[str, Any], max_steps: int) -> Callable[[int], float]:
    """Multiplier of the base LR at iteration t: linear warm-up, then the named schedule."""
    schedule = SCHEDULERS.load(cfg["name"], "scheduler.name")
    warmup = int(cfg["warmup_steps"])

    def factor(t: int) -> float:
        return (t + 1) / warmup if t < warmup else schedule(t, cfg, max_steps)

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
