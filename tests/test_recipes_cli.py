"""Recipes resolve strictly; the CLI reports user errors in one line with exit 2."""

import json

import pytest
import yaml
from conftest import run_cli

from gicl.errors import RecipeError
from gicl.recipes import recipe_names, resolve


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_and_profile_resolves(name):
    raw = yaml.safe_load(open(f"recipes/{name}.yaml"))
    for profile in ["paper", *(raw.get("profiles") or {})]:
        cfg = resolve(name, profile)
        assert cfg["stages"] and cfg["profile"] == profile


def test_profile_overlays_and_overrides_apply_in_order():
    cfg = resolve("vqgan", "smoke", ["stages.pretrain.max_steps=11", "codec.n_embed=32"])
    assert cfg["stages"]["pretrain"]["max_steps"] == 11
    assert cfg["codec"]["n_embed"] == 32 and cfg["codec"]["ch"] == 32  # smoke width kept
    assert cfg["stages"]["pretrain"]["loss"]["adv"] == 0.8  # untouched paper value


@pytest.mark.parametrize("override,key", [
    ("stages.pretrain.max_stepz=3", "stages.pretrain.max_stepz"),
    ("stages.pretrain.loss.l3=1", "stages.pretrain.loss.l3"),
    ("data.crops=3", "data.crops"),
    ("codec.chanels=3", "codec.chanels"),
    ("stages.nope.max_steps=1", "stages.nope"),
])
def test_unknown_keys_are_errors_naming_the_key(override, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        resolve("vqgan", "smoke", [override])


def test_cli_unknown_key_exits_2_with_one_line():
    proc = run_cli("info", "--recipe", "vqgan", "--set", "codec.chanels=3", "--json")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "codec.chanels" in lines[0] and "Traceback" not in proc.stderr


def test_info_json_reports_parameters_and_flops():
    proc = run_cli("info", "--recipe", "vqgan", "--profile", "smoke", "--size", "64x48", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    params = info["parameters"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total") > 0
    # FLOPs = 2·MACs: the first conv alone is 2·(3·9·32)·64·48 FLOPs (+ the rest)
    assert info["flops"]["total"] > 2 * 3 * 9 * 32 * 64 * 48
    assert info["operating_points"] == [{}]


def test_print_config_and_recipes_listing():
    proc = run_cli("fit", "--recipe", "vqgan", "--profile", "smoke", "--print-config")
    assert proc.returncode == 0
    assert yaml.safe_load(proc.stdout)["stages"]["pretrain"]["max_steps"] == 6
    listing = run_cli("recipes")
    assert "vqgan" in listing.stdout and "smoke" in listing.stdout


def test_unknown_recipe_and_profile():
    proc = run_cli("fit", "--recipe", "nope")
    assert proc.returncode == 2 and "unknown recipe 'nope'" in proc.stderr
    proc = run_cli("fit", "--recipe", "vqgan", "--profile", "huge")
    assert proc.returncode == 2 and "no profile 'huge'" in proc.stderr


@pytest.mark.parametrize("command", ["fit", "info", "recipes", "bench", "demo"])
def test_every_subcommand_has_help(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "usage" in proc.stdout


def test_callbacks_come_from_the_module_and_the_codec():
    vqgan = resolve("vqgan", "smoke")["stages"]["pretrain"]["callbacks"]
    controlgic = resolve("controlgic", "smoke")["stages"]["train"]["callbacks"]
    assert vqgan == {"codebook_usage": {}, "rd_curves": {}}  # no frequency table for VQGAN
    assert controlgic == {"codebook_usage": {}, "rd_curves": {}, "frequency_table": {"start": 0}}
    dropped = resolve("controlgic", "smoke", ["stages.train.callbacks.rd_curves=false"])
    assert dropped["stages"]["train"]["callbacks"]["rd_curves"] is False


def test_moved_keys_say_where_they_went():
    moved = r"'stages\.pretrain\.optimizer'.*moved to 'stages\.pretrain\.optimizers\.codec'"
    with pytest.raises(RecipeError, match=moved):
        resolve("vqgan", "smoke", ["stages.pretrain.optimizer.lr=1"])


def test_module_options_are_typed():
    with pytest.raises(RecipeError, match=r"stages\.pretrain\.loss\.adaptive must be bool"):
        resolve("vqgan", "smoke", ["stages.pretrain.loss.adaptive=1"])
    unknown = r"unknown optimizer 'sgdd' in stages\.pretrain\.optimizers\.disc\.name"
    with pytest.raises(RecipeError, match=unknown):
        resolve("vqgan", "smoke", ["stages.pretrain.optimizers.disc.name=sgdd"])


@pytest.mark.parametrize(("text", "value"), [("3e-3", 0.003), ("1E4", 1e4), ("-2.5e-1", -0.25), ("5", 5)])
def test_overrides_read_exponent_numbers_as_numbers(text, value):
    """YAML 1.1 reads `3e-3` (no dot) as a string; an override means the number."""
    lr = resolve("progic", "smoke", [f"stages.train.optimizers.codec.lr={text}"])
    assert lr["stages"]["train"]["optimizers"]["codec"]["lr"] == value
