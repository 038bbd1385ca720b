"""Outside code plugs in through a recipe's `plugins:`: codecs, a training module with its
own stage option and optimizer set, a callback; a stage starts from another codec's
weights through `init.map`; `Codec.update()` tables travel in the model file."""

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli

from gicl.errors import RecipeError
from gicl.recipes import resolve

PLUGINS = REPO / "tests" / "plugins"
RECIPE = str(PLUGINS / "toy_two_stage.yaml")


def test_two_stage_plugin_recipe_trains_in_a_subprocess(tmp_path):
    proc = run_cli("fit", "--recipe", RECIPE, "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert a["codec"]["name"] == "toy" and b["codec"]["name"] == "toy_refined"

    # init.map: stage b's frozen analysis transform is stage a's encoder, under its new name;
    # the refinement it adds starts fresh, and the log says so
    assert torch.equal(b["state_dict"]["analysis.weight"], a["state_dict"]["encoder.weight"])
    assert "start fresh 2 (refine.weight, refine.bias); unused 0" in proc.stderr

    # the aux optimizer stepped the EntropyBottleneck quantiles on codec.aux_loss() only
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["gicl"]["optimizers"] == ["codec", "aux"] and len(ckpt["optimizer_states"]) == 2
    quantiles = a["state_dict"]["entropy_bottleneck.quantiles"]
    init = torch.tensor([-10.0, 0.0, 10.0])  # EntropyBottleneck's init_scale 10
    assert not torch.allclose(quantiles, init.expand_as(quantiles))
    records = {s: json.loads((tmp_path / s / "toy_record.json").read_text()) for s in "ab"}
    aux = [r["aux_loss"] for r in records["a"] + records["b"]]
    assert all(later < earlier for earlier, later in zip(aux, aux[1:], strict=False))

    # the callback ran every_n = 2 in stage a (recipe option), every iteration in stage b
    # (the module's default), and saw each stage's own λ
    assert [(r["iteration"], r["lmbda"]) for r in records["a"]] == [(2, 50.0), (4, 50.0)]
    assert [(r["iteration"], r["lmbda"]) for r in records["b"]] == [(1, 200.0), (2, 200.0), (3, 200.0)]

    # the model file of stage 2 carries the CDF tables update() built from its weights, names
    # the plugin that defines its codec, and `gicl export` of its checkpoint builds the same
    stored = b["state_dict"]["bottleneck_._quantized_cdf"]
    assert stored.numel() > 0 and stored.shape[0] == 8 and b["meta"]["plugins"] == ["gicl_toy"]
    exported = tmp_path / "exported.pt"
    proc = run_cli("export", str(tmp_path / "b" / "checkpoints" / "last.ckpt"), str(exported),
                   env={"PYTHONPATH": str(PLUGINS), "GICL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(torch.load(exported, weights_only=True)["state_dict"]["bottleneck_._quantized_cdf"],
                       stored)
    sys.path.insert(0, str(PLUGINS))
    try:
        from gicl.model_file import load_model_file

        codec, _ = load_model_file(tmp_path / "b" / "final.pt")  # loads, then update() again
    finally:
        sys.path.remove(str(PLUGINS))
    assert torch.equal(codec.bottleneck_._quantized_cdf, stored)
    assert torch.equal(codec.bottleneck_._cdf_length, b["state_dict"]["bottleneck_._cdf_length"])


@pytest.mark.parametrize("override,message", [
    ("stages.a.lmbdaa=1", "stages.a.lmbdaa"),
    ("stages.a.lmbda=much", "stages.a.lmbda must be float"),
    ("stages.a.callbacks.toy_record.every=3", "stages.a.callbacks.toy_record.every"),
    ("stages.a.callbacks.nope={}", "unknown callback 'nope'"),
    ("stages.b.init.map.x=1", "stages.b.init.map"),
    ("stages.b.codec.name=toy_big", "unknown codec 'toy_big'"),
])
def test_plugin_declarations_validate_the_recipe(override, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        resolve(RECIPE, "paper", [override])


def test_init_across_codecs_needs_a_map(tmp_path):
    proc = run_cli("fit", "--recipe", RECIPE, "--run-dir", str(tmp_path),
                   "--set", "stages.a.max_steps=1", "--set", "stages.b.init=previous")
    assert proc.returncode == 2
    assert "holds a 'toy' codec; this stage trains 'toy_refined'" in proc.stderr
    assert "Traceback" not in proc.stderr and Path(tmp_path / "a" / "done").is_file()
