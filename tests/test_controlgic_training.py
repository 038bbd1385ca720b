"""Control-GIC training: the frequency table written by a smoke run counts coded tokens."""

import torch
from conftest import run_cli

from gicl.codecs.base import build_codec
from gicl.recipes import resolve


def test_smoke_fit_writes_the_frequency_table_of_coded_tokens(tmp_path):
    proc = run_cli("fit", "--recipe", "controlgic", "--profile", "smoke", "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = torch.load(tmp_path / "train" / "final.pt", weights_only=True)["state_dict"]["index_frequencies"]

    config = resolve("controlgic", "smoke")
    codec = build_codec(config["codec"]).eval()
    with torch.no_grad():  # the router's counts depend on the ratios and the size only
        masks = codec(torch.rand(1, 3, 64, 64), config["stages"]["train"]["train_point"]).extras["masks"]
    per_image = sum(int(m.sum()) for m in masks.values())
    steps, batch = config["stages"]["train"]["max_steps"], config["data"]["batch_size"]
    assert int(table.sum()) == steps * batch * per_image
    assert int(table.max()) > int(table.min())  # non-uniform
