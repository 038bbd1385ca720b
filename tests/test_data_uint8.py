"""The training stream ships uint8 pixels; the training modules turn them into the floats the
loader used to make (`pixels.float() / 255` in the workers) after the transfer, on the device,
with the trainer's precision applied as before."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from data_helpers import noise_jpeg_shards, noise_png
from PIL import Image

from gicl.data import build_train_loader
from gicl.data.shards import folder_items, write_shards
from gicl.images import _unit_levels, unit_float
from gicl.training.base import CodecTraining

SIDE = 16  # the noise images' side: a random crop of SIDE is the whole image


def test_unit_float_is_the_cpu_division_for_every_level() -> None:
    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    expected = levels.float() / 255
    assert torch.equal(unit_float(levels), expected)
    # the look-up other devices use, run here on the CPU
    assert torch.equal(_unit_levels(levels.device)[levels.long()], expected)
    floats = torch.rand(2, 3)
    assert unit_float(floats) is floats  # float batches (validation) pass unchanged


class Probe(L.LightningModule):
    """Records the image batches `training_step` sees, converted by the modules' own hook."""

    on_after_batch_transfer = CodecTraining.on_after_batch_transfer

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["image"].clone())
        return (self.w - batch["image"].float().mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_training_step_sees_the_floats_of_the_old_float_loader(tmp_path: Path, precision: str) -> None:
    src = tmp_path / "src"
    paths = [noise_png(src / f"{i:02d}.png", seed=i, size=SIDE) for i in range(4)]
    manifest = write_shards(folder_items(src), str(tmp_path / "n-%02d.tar"), total=4, maxcount=4,
                            progress=False)
    loader = build_train_loader({"train": str(tmp_path / manifest["pattern"]), "resampled": False,
                                 "crop": SIDE, "transform": "random_crop", "shuffle_buffer": 0,
                                 "num_workers": 0}, batch_size=2)
    assert next(iter(loader))["image"].dtype == torch.uint8
    probe = Probe()
    L.Trainer(max_epochs=1, accelerator="cpu", precision=precision, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(probe, loader)
    # the old path: the decoded uint8 crop, stacked, `.float().div_(255)` in the worker, then
    # Lightning's precision conversion of floating inputs
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                          for p in paths])
    old = L.Trainer(accelerator="cpu", precision=precision, logger=False).precision_plugin \
        .convert_input(pixels.float().div_(255))
    seen = torch.cat(probe.seen)
    assert seen.dtype == old.dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float32)
    assert torch.equal(seen, old)


def test_worker_batches_are_channels_last_and_become_contiguous_floats(tmp_path: Path) -> None:
    """JPEG crops are stacked as (H, W, 3) rows (decode_jpeg's own layout), in a worker into
    its ring slot, copied out by the main process: the same pixels as in the loading process,
    and `unit_float` gives the contiguous floats of the division."""
    pattern = noise_jpeg_shards(tmp_path, 4, 40, 56, maxcount=4)

    def batches(workers: int) -> list[torch.Tensor]:
        cfg = {"train": pattern, "resampled": False, "crop": 32,
               "shuffle_buffer": 0, "num_workers": workers}
        return [b["image"] for b in build_train_loader(cfg, batch_size=2)]

    here, worker = batches(0), batches(1)
    assert len(here) == len(worker) == 2
    for a, b in zip(here, worker, strict=True):
        assert a.shape == b.shape == (2, 3, 32, 32) and torch.equal(a, b)
        assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
        assert not b.is_shared()  # taken out of the ring, not a per-batch shared segment
        floats = unit_float(b)
        assert floats.is_contiguous() and torch.equal(floats, b.contiguous().float() / 255)
