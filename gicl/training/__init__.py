"""LightningModules, one per protocol-stage kind, registered in gicl.registry.MODULES.

This package's `__init__` and `options` import no Lightning: the recipe validator reads the
modules' stage options from `gicl.training.options` without loading training code.
"""
