"""Named building blocks a recipe can refer to: codecs, training modules, optimizers,
schedulers and callbacks (in the spirit of `compressai.registry`).

Built-ins are registered here by import string (`"package.module:Attribute"`), so naming
one — resolving a recipe, printing it, reporting a mistyped key — imports neither torch nor
Lightning; the object is imported the first time something is built from it. Code outside
the package registers itself when imported, with the same calls:

    from gicl.registry import CODECS, CALLBACKS
    @CODECS.register("mycodec")            # or: register_codec from gicl.codecs.base
    class MyCodec(Codec): ...
    CALLBACKS.register("my_callback", MyCallback)

and a recipe lists such modules under `plugins:` so that every process that runs the recipe
(DDP workers, SLURM jobs) imports them too (see docs/recipes.md).

A name that is not registered is one error listing the registered names.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gicl.errors import RecipeError


class Registry:
    """name → object or lazy import string, plus free-form metadata per name."""

    def __init__(self, kind: str, discover: Callable[[Registry], None] | None = None) -> None:
        """discover: called once when a name is missing, to register entries that are
        declared elsewhere (e.g. codec modules with `@register_codec`, see _scan_codecs)."""
        self.kind = kind
        self._targets: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._discover = discover

    # -- registration --------------------------------------------------------------------
    def register(self, name: str, target: Any = None, **meta: Any) -> Any:
        """register(name, obj_or_import_string, **meta), or `@register(name, **meta)`."""
        if target is None:
            def decorator(obj: Any) -> Any:
                self.register(name, obj, **meta)
                return obj

            return decorator
        old = self._targets.get(name)
        if old is not None and old is not target and not self._same(old, target):
            raise RecipeError(f"{self.kind} '{name}' is registered twice ({_label(old)} and "
                              f"{_label(target)}): rename one of them")
        self._targets[name] = target
        self._meta[name] = {**self._meta.get(name, {}), **meta}
        return target

    @staticmethod
    def _same(old: Any, new: Any) -> bool:
        """A lazy entry replaced by the object it names (its module registering itself)."""
        return _label(old) == _label(new)

    # mapping access: `REGISTRY[name] = obj` registers without the duplicate check
    # (tests swap entries with monkeypatch.setitem), `REGISTRY[name]` is `load(name)`
    def __getitem__(self, name: str) -> Any:
        return self.load(name)

    def get(self, name: str, default: Any = None) -> Any:
        """Like dict.get: the registered object (imported), or `default`."""
        return self.load(name) if name in self else default

    def __setitem__(self, name: str, target: Any) -> None:
        self._targets[name] = target

    def __delitem__(self, name: str) -> None:
        del self._targets[name]
        self._meta.pop(name, None)

    # -- lookup --------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name)

    def _find(self, name: str) -> bool:
        if name not in self._targets and self._discover:
            discover, self._discover = self._discover, None
            discover(self)
        return name in self._targets

    def check(self, name: Any, where: str) -> None:
        """RecipeError naming `where` and the registered names when `name` is unknown."""
        if not isinstance(name, str) or not self._find(name):
            raise RecipeError(f"unknown {self.kind} {name!r} in {where} "
                              f"(known: {', '.join(self.names())})")

    def load(self, name: str, where: str = "") -> Any:
        """The registered object, imported on first use; RecipeError when unknown."""
        self.check(name, where or self.kind)
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            target = self._targets[name] = obj
        return target

    def meta(self, name: str) -> dict[str, Any]:
        self.check(name, self.kind)
        return dict(self._meta.get(name, {}))

    def keywords(self, name: str) -> set[str] | None:
        """Keyword names the registered class's constructor (or function) accepts, or None
        when it takes **kwargs. Read from the source for entries not imported yet (with
        `ast`, without executing it), so that a recipe key is checked without torch."""
        self.check(name, self.kind)
        target = self._targets[name]
        if isinstance(target, str):
            found = static_keywords(target)
            if found is not _UNKNOWN:
                return found
            target = self.load(name)
        return signature_keywords(target)


_UNKNOWN: Any = object()


def _label(target: Any) -> str:
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"


def signature_keywords(target: Any) -> set[str] | None:
    import inspect

    fn = target.__init__ if isinstance(target, type) else target
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {k for k, p in params.items() if k != "self" and p.kind is not p.VAR_POSITIONAL}


def _source_file(module: str) -> Path | None:
    """The .py file of `module` found without executing it (its parent packages' specs
    are looked up, which imports no more than `import gicl` does)."""
    parent, _, leaf = module.rpartition(".")
    try:
        if not parent:
            spec = importlib.util.find_spec(module)
        else:
            pspec = importlib.util.find_spec(parent)
            locations = pspec.submodule_search_locations if pspec else None
            spec = importlib.machinery.PathFinder.find_spec(leaf, list(locations or []))
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def static_keywords(target: str) -> Any:
    """Constructor keyword names of `module:Class` (or `module:function`) from its source,
    `_UNKNOWN` when that cannot be told statically (inherited constructor, no source)."""
    module, _, attr = target.partition(":")
    path = _source_file(module)
    if path is None or "." in attr:
        return _UNKNOWN
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef)
                         and n.name == "__init__"), None)
            return _UNKNOWN if init is None else _arg_names(init, skip_self=True)
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return _arg_names(node, skip_self=False)
    return _UNKNOWN


def _arg_names(fn: ast.FunctionDef, skip_self: bool) -> set[str] | None:
    if fn.args.kwarg is not None:
        return None
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    return set(names[1:] if skip_self else names)


# -- the registries and the built-ins ----------------------------------------------------------

def _scan_codecs(registry: Registry, folders: list[str] | None = None) -> None:
    """Register, by import string, every `@register_codec` class in gicl/codecs/*.py that
    the table below does not list, reading the sources with `ast` (nothing is imported):
    a new codec module needs only its decorator."""
    if folders is None:
        spec = importlib.util.find_spec("gicl.codecs")
        folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and any(
                        getattr(d, "id", getattr(d, "attr", None)) == "register_codec"
                        for d in node.decorator_list):
                    codec_id = next((stmt.value.value for stmt in node.body
                                     if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                                     and any(getattr(t, "id", None) == "codec_id" for t in stmt.targets)),
                                    None)
                    if isinstance(codec_id, str) and codec_id not in registry._targets:
                        registry.register(codec_id, f"gicl.codecs.{path.stem}:{node.name}")


CODECS = Registry("codec", discover=_scan_codecs)
MODULES = Registry("training module")
OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
CALLBACKS = Registry("callback")

# Codecs. meta: `callbacks` = callbacks every stage training this codec gets by default.
CODECS.register("vqgan", "gicl.codecs.vqgan:VQGAN")
CODECS.register("progic", "gicl.codecs.progic:ProGIC")
CODECS.register("controlgic", "gicl.codecs.controlgic:ControlGIC", callbacks=("frequency_table",))
CODECS.register("hvq_cgic", "gicl.codecs.hvq_cgic:HVQCGIC", callbacks=("static_baseline",))
CODECS.register("hvq_progic", "gicl.codecs.hvq_progic:HVQProGIC", callbacks=("static_baseline",))
CODECS.register("hvq_vqgan", "gicl.codecs.hvq_vqgan:HVQVQGAN", callbacks=("static_baseline",))

# Training modules. meta: `options` = the Lightning-free dataclass of the module's own stage
# keys (gicl.training.options), read by the recipe validator without importing the module.
MODULES.register("vqgan", "gicl.training.gan:GANTraining",
                 options="gicl.training.options:GANOptions")
MODULES.register("progic", "gicl.training.progressive:ProgressiveTraining",
                 options="gicl.training.options:ProgressiveOptions")
MODULES.register("glc_latent", "gicl.training.glc:GLCLatentTraining",
                 options="gicl.training.options:GLCLatentOptions")
MODULES.register("glc_joint", "gicl.training.glc:GLCJointTraining",
                 options="gicl.training.options:GLCJointOptions")
MODULES.register("hyperprior", "gicl.training.hyperprior:HyperpriorTraining",
                 options="gicl.training.options:HyperpriorOptions")
MODULES.register("joint_rd", "gicl.training.hyperprior:JointRDTraining",
                 options="gicl.training.options:JointRDOptions")

OPTIMIZERS.register("adam", "torch.optim:Adam")
OPTIMIZERS.register("adamw", "torch.optim:AdamW")

# Schedulers: functions (iteration, config, max_steps) → factor of the base learning rate.
SCHEDULERS.register("constant", "gicl.training.optim:constant")
SCHEDULERS.register("multistep", "gicl.training.optim:multistep")
SCHEDULERS.register("cosine", "gicl.training.optim:cosine")

CALLBACKS.register("frequency_table", "gicl.callbacks.frequency_table:FrequencyTable")
CALLBACKS.register("static_baseline", "gicl.callbacks.static_baseline:StaticBaseline")
CALLBACKS.register("codebook_usage", "gicl.callbacks.codebook:CodebookUsage")
CALLBACKS.register("rd_curves", "gicl.callbacks.rd_curves:RDCurves")


def import_plugins(modules: list[str], search: Path | None = None) -> None:
    """Import each plugin module (it registers its codecs, modules, callbacks, ...).

    search: a folder tried after sys.path (the recipe's own folder), so that a recipe can
    ship next to its plugin file.
    """
    import sys

    if search is not None and str(search) not in sys.path:
        sys.path.append(str(search))
    for name in modules:
        if not isinstance(name, str) or not name:
            raise RecipeError(f"plugins: expected importable module names, got {name!r}")
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise RecipeError(f"plugins: cannot import '{name}' ({e}): put it on PYTHONPATH or "
                              "next to the recipe file") from None

