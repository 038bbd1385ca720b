"""Workers stack batches into shared-memory slots reused batch after batch; the main process
copies each batch out as it arrives, and a worker never overwrites a batch not yet taken."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from data_helpers import noise_jpeg_shards

from gicl.data import build_train_loader
from gicl.data.batch_ring import BatchRing, SlotRef, shared_memory_free


def test_a_worker_waits_for_a_slot_until_its_batch_is_taken() -> None:
    ring = BatchRing(workers=1, slots=2, batch_size=2, crop=4)
    for produced in range(2):
        pixels, index = ring.slot(0, produced)
        pixels.fill_(produced + 1)
        assert index == produced
    got: list[int] = []
    third = threading.Thread(target=lambda: got.append(ring.slot(0, 2)[1]))
    third.start()
    third.join(0.2)
    assert third.is_alive() and not got  # slot 0 still holds batch 0
    first = ring.take(SlotRef(0, 0, 2), pin_memory=False)
    third.join(5)
    assert got == [0]
    assert first.shape == (2, 3, 4, 4) and first.is_contiguous(memory_format=torch.channels_last)
    ring.pixels[0, 0].fill_(9)  # the worker reuses the slot: the taken batch is a copy
    assert bool((first == 1).all())


def test_a_worker_stops_waiting_when_the_main_process_is_gone() -> None:
    """Killed without shutting its workers down, the main process never takes another batch:
    a worker waiting for a slot must end, not spin forever as an orphan."""
    ring = BatchRing(workers=1, slots=1, batch_size=1, crop=2)
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    ring.owner = int(exited.stdout)
    ring.slot(0, 0)
    with pytest.raises(ProcessLookupError):
        ring.slot(0, 1)


def test_more_batches_than_slots_deliver_every_image_once_from_two_workers(tmp_path: Path) -> None:
    """24 whole 32² images (the crop is the image, no flip) in batches of 2: 6 batches per
    worker through 3 slots each. A batch overwritten before it was taken would show up as a
    later batch twice and the earlier one never."""
    pattern = noise_jpeg_shards(tmp_path, 24, 32, 32, maxcount=8)

    def images(workers: int) -> list[bytes]:
        cfg = {"train": pattern, "resampled": False, "crop": 32,
               "transform": "random_crop", "shuffle_buffer": 0, "num_workers": workers}
        batches = [b["image"] for b in build_train_loader(cfg, batch_size=2)]
        assert len(batches) == 12
        return sorted(image.numpy().tobytes() for batch in batches for image in batch)

    assert images(2) == images(0)
    assert len(set(images(0))) == 24


def test_a_ring_that_dev_shm_cannot_hold_is_not_made(tmp_path: Path, caplog) -> None:
    """Touching shared pages beyond /dev/shm's size would kill the process with SIGBUS: when
    the slots do not fit, batches travel PyTorch's way and a warning says so once."""
    free = shared_memory_free()
    assert free is not None and free > 0  # Linux
    pattern = noise_jpeg_shards(tmp_path, 2, 32, 32, maxcount=2)
    cfg = {"train": pattern, "resampled": True, "epoch_samples": 4, "crop": 32, "num_workers": 2}
    assert isinstance(build_train_loader(cfg, batch_size=2)._new_ring(), BatchRing)
    too_big = free // BatchRing.nbytes(2, 3, 1, 32) + 1
    loader = build_train_loader(cfg, batch_size=too_big)
    with caplog.at_level("WARNING", logger="gicl.data"):
        assert loader._new_ring() is None and loader._new_ring() is None
    assert sum("batch slots need" in r.getMessage() for r in caplog.records) == 1
