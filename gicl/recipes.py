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
import importlib
import re
from pathlib import Path
from typing import Any

import yaml

from gicl.errors import RecipeError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
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
    "progress_every_s": 30,  # a plain progress line this often when stderr is not a terminal
    "val_every_n_steps": 5000,
    "ckpt_every_n_steps": 1000,
    "val_batches": 4,  # validation images per validation run
    "compile": False,
    # intra-op threads per process: auto → the node's usable cores less one per data worker,
    # divided by its processes (gicl.runner.threads_per_process: never more threads than cores)
    "threads": "auto",
    "deterministic": False,
}

# Keys every stage has, whatever its module; the module adds its own (gicl.training.options).
STAGE_DEFAULTS: dict[str, Any] = {
    "module": "vqgan",
    "codec": None,  # None → the recipe's codec section; or a codec section of the stage's own
    "init": None,  # None | "previous" | PATH | {from: previous|PATH, map: {src.: dst.}, strict: bool}
    "frozen": [],  # codec parameter groups (Codec.parameter_groups) kept fixed
    "max_steps": 1000,  # iterations (batches), whatever the number of optimizers
    "batch_size": None,  # global batch; None → data.batch_size
    "micro_batches": 1,  # split each rank's batch to save memory; still one step per iteration
    "scheduler": {"name": "constant", "milestones": [], "gamma": 0.1, "warmup_steps": 0},
    # per optimizer step: `norm` (global L2 norm of the gradients) or `value` (each element)
    "gradient_clip": {"algorithm": "norm", "max": None},
    "precision": None,  # None → trainer.precision; 32-true, bf16-mixed, 16-mixed, ...
    # model EMA (timm ModelEmaV3, gicl.training.ema): decay null = off; the EMA copies the raw
    # weights after iterations 1..start, then averages after every `every`-th iteration
    "ema": {"decay": None, "start": 0, "every": 1},
    # LPIPS needs pretrained VGG16 weights that cannot always be downloaded: `required` stops
    # naming the file to place, `auto` trains without the term and records it, `off` never loads
    "perceptual": "auto",
    "callbacks": {},  # name → options (false drops a default); defaults from module and codec
}

# Stage sections whose keys are open: validated against the codec / callback constructors.
OPEN_SECTIONS = {"codec", "callbacks", "init"}

# Keys that moved; an old recipe or --set naming one is told where it went.
MOVED_KEYS = {
    "optimizer": "optimizers.codec",
    "disc_optimizer": "optimizers.disc",
    "frequency_table_from": "callbacks.frequency_table.start",
    "clip_grad_norm": "gradient_clip.max",  # with the default algorithm, norm
}


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
    leaf = key.rsplit(".", 1)[-1]
    if leaf in MOVED_KEYS:
        return RecipeError(f"unknown key '{key}': it moved to '{key.rsplit('.', 1)[0]}."
                           f"{MOVED_KEYS[leaf]}' (see docs/recipes.md)")
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known))})"
    return RecipeError(f"unknown key '{key}'{hint}")


def _is_open(path: str) -> bool:
    """`codec`, `stages.S.codec`, `stages.S.callbacks`, `stages.S.init` accept new keys."""
    parts = path.split(".")
    return parts == ["codec"] or (len(parts) == 3 and parts[0] == "stages" and parts[2] in OPEN_SECTIONS)


def merge(
    base: dict[str, Any], overlay: dict[str, Any], where: str = "", open_keys: bool = False,
    whole: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Deep-merge overlay into a copy of base; keys new to base are errors unless open.

    whole: dotted paths (relative to `where`'s stage) replaced whole instead of merged.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        path = f"{where}.{key}" if where else str(key)
        is_open = open_keys or _is_open(path)
        if key not in out:
            if not is_open:
                raise _unknown(path, list(out))
            out[key] = copy.deepcopy(value)
        elif (isinstance(out[key], dict) and isinstance(value, dict) and out[key]
              and _stage_path(path) not in whole):
            out[key] = merge(out[key], value, path, is_open, whole)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _stage_path(path: str) -> str:
    """'stages.S.train_point' → 'train_point' (paths below a stage, as options declare them)."""
    parts = path.split(".")
    return ".".join(parts[2:]) if parts[0] == "stages" and len(parts) > 2 else path


def module_options(name: Any, where: str) -> type:
    """The options dataclass a training module declared (imported without Lightning)."""
    from gicl.registry import MODULES

    options = MODULES.meta(name).get("options") if name in MODULES else None
    MODULES.check(name, where)
    if isinstance(options, str):
        module, _, attr = options.partition(":")
        options = getattr(importlib.import_module(module), attr)
    if options is None:
        raise RecipeError(f"training module '{name}' declares no stage options: register it "
                          "with MODULES.register(name, cls, options=<dataclass>)")
    return options


def _whole(config: dict[str, Any]) -> frozenset[str]:
    from gicl.training.options import whole_keys

    out: set[str] = set()
    for stage in config["stages"].values():
        out |= whole_keys(module_options(stage["module"], "module"))
    return frozenset(out)


def _callbacks_mapping(value: Any, where: str) -> dict[str, Any]:
    """`[a, b]` or `{a: {opt: 1}, b: false}` → {name: options | False}."""
    if value is None:
        return {}
    if isinstance(value, list):
        value = {name: {} for name in value}
    if not isinstance(value, dict):
        raise RecipeError(f"{where} must be a list of callback names or a mapping name → options")
    return {k: ({} if v is None or v is True else v) for k, v in value.items()}


def default_callbacks(module: str, codec: dict[str, Any]) -> dict[str, Any]:
    """The callbacks a stage gets unless its recipe drops them: the module's and the codec's."""
    from gicl.registry import CODECS

    names = list(getattr(module_options(module, "module"), "callbacks", ()))
    if codec.get("name") in CODECS:
        names += CODECS.meta(codec["name"]).get("callbacks", ())
    return {name: {} for name in names}


def _normalise(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Fill section defaults so that every valid key exists before overlays apply."""
    from gicl.data.config import DATA_DEFAULTS
    from gicl.training.options import defaults, whole_keys

    allowed = {"name", "description", "plugins", "why", "codec", "data", "trainer", "stages", "profiles"}
    for key in raw:
        if key not in allowed:
            raise _unknown(key, sorted(allowed))
    if not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise RecipeError(f"{path}: 'stages' must be a non-empty mapping of stage name → settings")
    codec = dict(raw.get("codec") or {})
    stages = {}
    for name, given in raw["stages"].items():
        given = dict(given or {})
        where = f"stages.{name}"
        module = given.get("module", STAGE_DEFAULTS["module"])
        options = module_options(module, f"{where}.module")
        base = {**STAGE_DEFAULTS, **defaults(options)}
        base["callbacks"] = default_callbacks(module, given.get("codec") or codec)
        given["callbacks"] = _callbacks_mapping(given.get("callbacks"), f"{where}.callbacks")
        stages[name] = merge(base, given, where, whole=frozenset(whole_keys(options)))
    return {
        "name": raw.get("name", path.stem),
        "description": raw.get("description", ""),
        "plugins": list(raw.get("plugins") or []),
        "why": _why(raw.get("why"), path),
        "codec": codec,
        "data": merge(DATA_DEFAULTS, raw.get("data") or {}, "data"),
        "trainer": merge(TRAINER_DEFAULTS, raw.get("trainer") or {}, "trainer"),
        "stages": stages,
    }


def _why(value: Any, path: Path) -> dict[str, str]:
    """The recipe's reasons for its training protocol (gicl.protocol.ASPECTS → text)."""
    from gicl.protocol import ASPECTS

    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RecipeError(f"{path}: 'why' must map protocol aspects to reasons (text)")
    for key in value:
        if key not in ASPECTS:
            raise _unknown(f"why.{key}", list(ASPECTS))
    return dict(value)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and _FLOAT.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads 3e-3 (no dot) as a string; on a command line it is a number
    return key.strip().split("."), parsed


def nest(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def resolve(name: str, profile: str = PROFILE_DEFAULT, overrides: list[str] | None = None) -> dict[str, Any]:
    """The fully resolved recipe: defaults ← file ← profile ← overrides, validated.

    The recipe's `plugins` are imported first (their registrations are needed to resolve
    it); every process that resolves the recipe — DDP workers, SLURM jobs — does the same.
    """
    from gicl.registry import import_plugins

    path = recipe_path(name)
    raw = load_yaml(path)
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        raise RecipeError(f"{path}: 'plugins' must be a list of importable module names")
    import_plugins(plugins, search=path.parent)
    profiles = raw.get("profiles") or {}
    config = _normalise(raw, path)
    if profile != PROFILE_DEFAULT:
        if profile not in profiles:
            raise RecipeError(
                f"recipe '{config['name']}' has no profile '{profile}' "
                f"(available: {', '.join([PROFILE_DEFAULT, *profiles])})"
            )
        overlay = dict(profiles[profile] or {})
        if "plugins" in overlay:
            raise RecipeError(f"profiles.{profile}.plugins: plugins belong at the top of the recipe")
        config = merge(config, _overlay_callbacks(overlay), whole=_whole(config))
    for item in overrides or []:
        keys, value = parse_override(item)
        if keys[0] == "plugins":
            raise RecipeError("--set plugins: plugins belong at the top of the recipe file")
        config = merge(config, _overlay_callbacks(nest(keys, value)), whole=_whole(config))
    config["profile"] = profile
    validate(config)
    return config


def _overlay_callbacks(overlay: dict[str, Any]) -> dict[str, Any]:
    """Let an overlay give a stage's callbacks as a list too."""
    for name, stage in (overlay.get("stages") or {}).items():
        if isinstance(stage, dict) and "callbacks" in stage:
            stage["callbacks"] = _callbacks_mapping(stage["callbacks"], f"stages.{name}.callbacks")
    return overlay


def stage_codec(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The codec section a stage trains: its own, else the recipe's."""
    return config["stages"][stage]["codec"] or config["codec"]


def init_spec(value: Any, where: str) -> dict[str, Any] | None:
    """`init` in its full form {from, map, strict}, or None (fresh weights)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"from": value}
    if not isinstance(value, dict):
        raise RecipeError(f"{where} must be previous, a path, or {{from: ..., map: ..., strict: ...}}")
    unknown = set(value) - {"from", "map", "strict"}
    if unknown:
        raise _unknown(f"{where}.{sorted(unknown)[0]}", ["from", "map", "strict"])
    spec = {"from": value.get("from"), "map": value.get("map") or {}, "strict": value.get("strict", False)}
    if not isinstance(spec["from"], str) or not spec["from"]:
        raise RecipeError(f"{where}.from must be 'previous' or a path to a model file or checkpoint")
    def prefixes(v: Any) -> bool:
        return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v))

    if not isinstance(spec["map"], dict) or not all(
            isinstance(k, str) and prefixes(v) for k, v in spec["map"].items()):
        raise RecipeError(f"{where}.map must map stored key prefixes to codec key prefixes (or "
                          "lists of them), e.g. {'encoder.': 'analysis.'}")
    if not isinstance(spec["strict"], bool):
        raise RecipeError(f"{where}.strict must be true or false")
    return spec


def _check_codec(section: Any, where: str) -> None:
    from gicl.registry import CODECS

    if not isinstance(section, dict):
        raise RecipeError(f"{where} must be a codec section with a 'name'")
    CODECS.check(section.get("name"), f"{where}.name")
    _check_keywords(CODECS.keywords(section["name"]), section, where, skip={"name"})


def _check_keywords(accepted: set[str] | None, given: dict[str, Any], where: str,
                    skip: set[str] = frozenset()) -> None:
    if accepted is None:
        return
    for key in given:
        if key not in accepted and key not in skip:
            raise RecipeError(f"unknown key '{where}.{key}' (known: {', '.join(sorted(accepted))})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_ema(ema: Any, where: str) -> None:
    """A stage's `ema` section: decay null (off) or in (0, 1), start ≥ 0, every ≥ 1."""
    if not isinstance(ema, dict):
        raise RecipeError(f"{where} must be a mapping {{decay, start, every}}, got {ema!r}")
    decay = ema["decay"]
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float))
                              or not 0 < decay < 1):
        raise RecipeError(f"{where}.decay must be null (no EMA) or a number in (0, 1), e.g. 0.9999; "
                          f"got {decay!r}")
    if not _is_int(ema["start"]) or ema["start"] < 0:
        raise RecipeError(f"{where}.start must be an integer ≥ 0 (iterations), got {ema['start']!r}")
    if not _is_int(ema["every"]) or ema["every"] < 1:
        raise RecipeError(f"{where}.every must be an integer ≥ 1 (iterations), got {ema['every']!r}")


def validate(config: dict[str, Any]) -> None:
    """Checks that need more than key names: codec kwargs, module and callback names, types,
    stage references. Reads registrations and option declarations only: no torch."""
    from gicl.registry import CALLBACKS, OPTIMIZERS, SCHEDULERS
    from gicl.training.options import check_types

    _check_codec(config["codec"], "codec")
    threads = config["trainer"]["threads"]
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise RecipeError(f"trainer.threads must be auto or a positive integer, got {threads!r}")
    if config["trainer"]["deterministic"] not in (True, False, "warn"):  # README "Exact resume"
        raise RecipeError(f"trainer.deterministic must be true, false or warn, got "
                          f"{config['trainer']['deterministic']!r}")
    names = list(config["stages"])
    for i, (name, stage) in enumerate(config["stages"].items()):
        where = f"stages.{name}"
        options = module_options(stage["module"], f"{where}.module")
        check_types(options, stage, where)
        if stage["codec"] is not None:
            _check_codec(stage["codec"], f"{where}.codec")
        init = init_spec(stage["init"], f"{where}.init")
        if init and init["from"] == "previous" and i == 0:
            raise RecipeError(f"{where}.init is 'previous' but it is the first stage ({names})")
        if stage["perceptual"] is False:  # YAML 1.1 reads a bare `off` as false
            stage["perceptual"] = "off"
        if stage["perceptual"] not in ("required", "auto", "off"):
            raise RecipeError(f"{where}.perceptual must be required, auto or off")
        if not isinstance(stage["max_steps"], int) or stage["max_steps"] < 1:
            raise RecipeError(f"{where}.max_steps must be a positive integer (iterations)")
        _check_training_choices(stage, where)
        check_ema(stage["ema"], f"{where}.ema")
        SCHEDULERS.check(stage["scheduler"]["name"], f"{where}.scheduler.name")
        for opt_name, opt in (stage.get("optimizers") or {}).items():
            OPTIMIZERS.check(opt["name"], f"{where}.optimizers.{opt_name}.name")
        for cb_name, cb_options in stage["callbacks"].items():
            if cb_options is False:
                continue
            CALLBACKS.check(cb_name, f"{where}.callbacks")
            if not isinstance(cb_options, dict):
                raise RecipeError(f"{where}.callbacks.{cb_name} must be a mapping of options or false")
            _check_keywords(CALLBACKS.keywords(cb_name), cb_options, f"{where}.callbacks.{cb_name}")


PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
CLIP_ALGORITHMS = ("norm", "value")


def _check_training_choices(stage: dict[str, Any], where: str) -> None:
    """Clipping, precision and the loss's scale and LPIPS choice: one line per bad value."""
    from gicl.losses.reconstruction import check_pixel_range

    clip = stage["gradient_clip"]
    if not isinstance(clip, dict) or clip.get("algorithm") not in CLIP_ALGORITHMS:
        raise RecipeError(f"{where}.gradient_clip.algorithm must be one of {', '.join(CLIP_ALGORITHMS)}")
    if clip["max"] is not None and (isinstance(clip["max"], bool)
                                    or not isinstance(clip["max"], int | float) or clip["max"] <= 0):
        raise RecipeError(f"{where}.gradient_clip.max must be a positive number or null (no clipping)")
    if stage["precision"] is not None and str(stage["precision"]) not in PRECISIONS:
        raise RecipeError(f"{where}.precision must be null (trainer.precision) or one of "
                          f"{', '.join(PRECISIONS)}; got {stage['precision']!r}")
    loss = stage.get("loss") or {}
    if "pixel_range" in loss:
        try:
            check_pixel_range(loss["pixel_range"], f"{where}.loss.pixel_range")
        except ValueError as e:
            raise RecipeError(str(e)) from None
    if "lpips" in loss:
        from gicl.losses.lpips_choices import LPIPS_INPUTS, LPIPS_NETS

        for key, allowed in (("net", LPIPS_NETS), ("input", LPIPS_INPUTS)):
            if loss["lpips"][key] not in allowed:
                raise RecipeError(f"{where}.loss.lpips.{key} must be one of {', '.join(allowed)}; "
                                  f"got {loss['lpips'][key]!r}")


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
