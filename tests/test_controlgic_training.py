"""Control-GIC training: the frequency table written by a smoke run counts coded tokens."""

import numpy as np
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


def one_iteration_table(micro_batches: int, batch: torch.Tensor) -> torch.Tensor:
    """The frequency table after one real Lightning iteration of the smoke stage on `batch`."""
    import lightning as L

    from gicl.callbacks.frequency_table import FrequencyTable
    from gicl.training.gan import GANTraining

    config = resolve("controlgic", "smoke", [f"stages.train.micro_batches={micro_batches}",
                                             "stages.train.max_steps=1"])
    torch.manual_seed(0)
    module = GANTraining(build_codec(config["codec"]), config["stages"]["train"], None)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[FrequencyTable(start=0, every_n=1)])
    trainer.fit(module, torch.utils.data.DataLoader([{"image": batch}], batch_size=None))
    return module.codec.index_frequencies.clone()


def test_frequency_table_counts_every_micro_batch(kodak):
    from PIL import Image

    crops = [Image.open(kodak / name).convert("RGB").crop((0, 0, 64, 64))
             for name in ("kodim01.png", "kodim05.png", "kodim13.png", "kodim23.png")]
    batch = torch.stack([torch.from_numpy(np.asarray(c).copy()).permute(2, 0, 1) for c in crops]) / 255
    whole, chunked = one_iteration_table(1, batch), one_iteration_table(2, batch)
    assert torch.equal(whole, chunked)
    codec = build_codec(resolve("controlgic", "smoke")["codec"])
    tokens = sum(int(m.sum()) for m in codec(batch[:1], {"ratios": [0.5, 0.4, 0.1]}).extras["masks"].values())
    assert int(chunked.sum()) == 4 * tokens  # all four images, not the last chunk's two
