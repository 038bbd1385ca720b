"""Shared-memory slots that DataLoader workers stack their batches into, reused batch after batch.

PyTorch sends a worker's batch tensor to the main process as a fresh shared-memory segment
and file descriptor: per 16×256² uint8 batch here ≈ 2–4 ms of segment creation, page faults
on both sides (each fresh page is zeroed, then mapped again in the main process) and fd
passing — 0.13–0.24 ms per image, against ≈ 0.85 ms to decode one (`gicl bench data`: one
worker delivered 49–59 % of raw `decode_jpeg`, the stream in-process 63–68 %). Here each
worker owns a few slots allocated before the workers start, so their pages are faulted once
per worker, not once per batch; a worker writes batch j into slot j mod `slots` and sends
only a `SlotRef`. The main process copies the batch out when it receives it (`take`:
one memcpy into a heap or pinned buffer that its allocator reuses) and counts it consumed;
a worker about to overwrite a slot whose batch has not been taken waits for it.

No deadlock: the DataLoader returns batches in task order, and the oldest batch not yet
returned belongs to a worker whose earlier batches have all been taken, so that worker's
slot is free. The DataLoader keeps at most `prefetch_factor` tasks per worker outstanding
in steady state, so with `slots` above that a worker never waits.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor

WAIT_SECONDS = 2e-4  # poll interval of a worker whose next slot is still held
OWNER_CHECK_POLLS = 5000  # about every second of waiting, check that the main process lives


@dataclass(frozen=True)
class SlotRef:
    """What a worker sends instead of its batch tensor: where the batch lies and its size."""

    worker: int
    slot: int
    images: int


def shared_memory_free() -> int | None:
    """Bytes free where PyTorch puts shared memory on Linux (/dev/shm), None elsewhere."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class BatchRing:
    """`slots` uint8 (batch, crop, crop, 3) buffers per worker in shared memory, and how many
    batches of each worker the main process has taken."""

    @staticmethod
    def nbytes(workers: int, slots: int, batch_size: int, crop: int) -> int:
        return workers * slots * batch_size * crop * crop * 3

    def __init__(self, workers: int, slots: int, batch_size: int, crop: int) -> None:
        self.slots = slots
        shape = (workers, slots, batch_size, crop, crop, 3)
        self.pixels = torch.zeros(shape, dtype=torch.uint8).share_memory_()
        self.taken = torch.zeros(workers, dtype=torch.int64).share_memory_()
        self.owner = os.getpid()  # the main process, which takes the batches

    def slot(self, worker: int, produced: int) -> tuple[Tensor, int]:
        """(the slot for a worker's batch number `produced`, its index), once the batch that
        last used it has been taken. A worker whose main process has died (killed, so it
        never shut its workers down) stops waiting with `ProcessLookupError`."""
        polls = 0
        while produced - int(self.taken[worker]) >= self.slots:
            time.sleep(WAIT_SECONDS)
            polls += 1
            if polls % OWNER_CHECK_POLLS == 0:
                os.kill(self.owner, 0)  # ProcessLookupError ends an orphaned worker
        index = produced % self.slots
        return self.pixels[worker, index], index

    def take(self, ref: SlotRef, pin_memory: bool) -> Tensor:
        """The batch `ref` points to as a (B, 3, crop, crop) uint8 tensor of its own,
        channels-last (the layout the workers write, `gicl.data.stream`)."""
        pixels = self.pixels[ref.worker, ref.slot, : ref.images]
        out = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=pin_memory)
        out.copy_(pixels)
        self.taken[ref.worker] += 1
        return out.permute(0, 3, 1, 2)
