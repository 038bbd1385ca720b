"""LightningModules, one per protocol-stage kind, registered by the name recipes use."""

from __future__ import annotations

from typing import Any

from gicl.errors import RecipeError

# name → "module:Class"; imported lazily so reading recipes does not import Lightning.
MODULES: dict[str, str] = {
    "vqgan": "gicl.training.gan:GANTraining",
    "progic": "gicl.training.progressive:ProgressiveTraining",
}


def module_class(name: str, where: str = "module") -> type:
    import importlib

    if name not in MODULES:
        raise RecipeError(f"unknown module '{name}' in {where} (known: {', '.join(sorted(MODULES))})")
    mod, cls = MODULES[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def module_loss_defaults(name: str, where: str = "module") -> dict[str, Any]:
    return dict(module_class(name, where).LOSS_DEFAULTS)
