"""Recipes: one YAML per paper protocol, resolved into one plain, validated dict.

Resolution order: the recipe file over the section defaults below, then a profile overlay
(`paper` is the file itself; `smoke`, `demo`, ... are overlays inside it), then `--set a.b=c`
overrides. Every key of an overlay or override must already exist after the step before it
(codec keys are checked against the codec's constructor instead), so a typo is an error
that names the key instead of a silently ignored setting.

Stages are an ordered mapping `stages: {name: {...}}`, so overlays and overrides address a
stage by name (`--set stages.pretrain.max_steps=10`).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from gicl.errors import RecipeError

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
PROFILE_DEFAULT = "paper"

TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",  # cpu | gpu | auto
    "devices": "auto",  # processes per node (GPUs, or CPU processes with accelerator=cpu)
    "num_nodes": 1,
    "strategy": "auto",  # auto → DDP when more than one process
    "precision": "auto",  # auto → bf16-mixed on GPU, 32 on CPU
    "seed": 0,
    "log_every_n_steps": 50,
    "val_every_n_steps": 5000,
    "ckpt_every_n_steps": 1000,
    "val_batches": 4,  # validation images per validation run
    "compile": False,
    "deterministic": False,
}

STAGE_DEFAULTS: dict[str, Any] = {
    "module": "vqgan",
    "init": None,  # None | "previous" | path to a model file or checkpoint
    "frozen": [],  # codec parameter groups (Codec.parameter_groups) kept fixed
    "max_steps": 1000,  # iterations (batches), whatever the number of optimizers
    "batch_size": None,  # global batch; None → data.batch_size
    "micro_batches": 1,  # split each rank's batch to save memory; still one step per iteration
    "optimizer": {"name": "adam", "lr": 1e-4, "betas": [0.5, 0.9], "weight_decay": 0.0, "eps": 1e-8},
    "disc_optimizer": {"name": "adam", "lr": 1e-4, "betas": [0.5, 0.9], "weight_decay": 0.0, "eps": 1e-8},
    "scheduler": {"name": "constant", "milestones": [], "gamma": 0.1, "warmup_steps": 0},
    "clip_grad_norm": None,
    "perceptual": "auto",  # required | auto | off (DESIGN: pretrained weights policy)
    "discriminator": {"ndf": 64, "n_layers": 3},
    "train_point": None,  # operating point for codec.forward in training; {sample: true} = random
    "frequency_table_from": 0,  # codecs with an index frequency table count it from this iteration
    "loss": {},  # module-specific; defaults come from the training module
}


# Mappings that an overlay replaces whole instead of merging into: an operating point is one value.
WHOLE_VALUES = {"train_point"}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """A recipe by name (recipes/NAME.yaml) or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe '{name}' (available: {', '.join(recipe_names())})")
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping at the top level")
    return data


def _unknown(key: str, known: list[str]) -> RecipeError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known))})"
    return RecipeError(f"unknown key '{key}'{hint}")


def merge(
    base: dict[str, Any], overlay: dict[str, Any], where: str = "", open_keys: bool = False
) -> dict[str, Any]:
    """Deep-merge overlay into a copy of base; keys new to base are errors unless open_keys.

    The `codec` section is open (validated against the codec constructor later).
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        path = f"{where}.{key}" if where else str(key)
        is_open = open_keys or path == "codec"
        if key not in out:
            if not is_open:
                raise _unknown(path, list(out))
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, dict) and out[key] and key not in WHOLE_VALUES:
            out[key] = merge(out[key], value, path, is_open)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _normalise(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Fill section defaults so that every valid key exists before overlays apply."""
    from gicl.data import DATA_DEFAULTS
    from gicl.training import module_loss_defaults

    allowed = {"name", "description", "codec", "data", "trainer", "stages", "profiles"}
    for key in raw:
        if key not in allowed:
            raise _unknown(key, sorted(allowed))
    if not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise RecipeError(f"{path}: 'stages' must be a non-empty mapping of stage name → settings")
    stages = {}
    for name, stage in raw["stages"].items():
        stage = merge(STAGE_DEFAULTS, {k: v for k, v in (stage or {}).items() if k != "loss"},
                      f"stages.{name}")
        loss_defaults = module_loss_defaults(stage["module"], f"stages.{name}.module")
        stage["loss"] = merge(loss_defaults, (raw["stages"][name] or {}).get("loss", {}),
                              f"stages.{name}.loss")
        stages[name] = stage
    return {
        "name": raw.get("name", path.stem),
        "description": raw.get("description", ""),
        "codec": dict(raw.get("codec") or {}),
        "data": merge(DATA_DEFAULTS, raw.get("data") or {}, "data"),
        "trainer": merge(TRAINER_DEFAULTS, raw.get("trainer") or {}, "trainer"),
        "stages": stages,
    }


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def nest(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def resolve(name: str, profile: str = PROFILE_DEFAULT, overrides: list[str] | None = None) -> dict[str, Any]:
    """The fully resolved recipe: defaults ← file ← profile ← overrides, validated."""
    path = recipe_path(name)
    raw = load_yaml(path)
    profiles = raw.get("profiles") or {}
    config = _normalise(raw, path)
    if profile != PROFILE_DEFAULT:
        if profile not in profiles:
            raise RecipeError(
                f"recipe '{config['name']}' has no profile '{profile}' "
                f"(available: {', '.join([PROFILE_DEFAULT, *profiles])})"
            )
        config = merge(config, profiles[profile] or {})
    for item in overrides or []:
        keys, value = parse_override(item)
        config = merge(config, nest(keys, value))
    config["profile"] = profile
    validate(config)
    return config


def validate(config: dict[str, Any]) -> None:
    """Checks that need more than key names: codec kwargs, module names, stage references."""
    import gicl.codecs  # noqa: F401  (registers codecs)
    from gicl.codecs.base import CODECS, check_kwargs
    from gicl.training import MODULES

    codec_name = config["codec"].get("name")
    if codec_name not in CODECS:
        raise RecipeError(f"unknown codec '{codec_name}' in codec.name (known: {', '.join(sorted(CODECS))})")
    kwargs = {k: v for k, v in config["codec"].items() if k != "name"}
    check_kwargs(CODECS[codec_name].__init__, kwargs, "codec")
    if config["trainer"]["deterministic"] not in (True, False, "warn"):  # README "Exact resume"
        raise RecipeError(f"trainer.deterministic must be true, false or warn, got "
                          f"{config['trainer']['deterministic']!r}")
    names = list(config["stages"])
    for i, (name, stage) in enumerate(config["stages"].items()):
        if stage["module"] not in MODULES:
            raise RecipeError(f"unknown module '{stage['module']}' in stages.{name}.module "
                              f"(known: {', '.join(sorted(MODULES))})")
        if stage["init"] == "previous" and i == 0:
            raise RecipeError(f"stages.{name}.init is 'previous' but it is the first stage ({names})")
        if stage["perceptual"] is False:  # YAML 1.1 reads a bare `off` as false
            stage["perceptual"] = "off"
        if stage["perceptual"] not in ("required", "auto", "off"):
            raise RecipeError(f"stages.{name}.perceptual must be required, auto or off")
        if not isinstance(stage["max_steps"], int) or stage["max_steps"] < 1:
            raise RecipeError(f"stages.{name}.max_steps must be a positive integer (iterations)")


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
