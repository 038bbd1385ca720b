"""The training stream: WebDataset shards → fixed-size batches of random crops, per rank.

Every rank yields the same number of batches per epoch (`len(loader)`), so DDP never waits
on a rank that ran out of data. A rank's n batches come from W streams, one per DataLoader
worker, batched inside the workers and interleaved round-robin by the DataLoader: batch k is
stream (k mod W)'s, and stream w makes exactly `len(range(w, n, W))` batches. The order is a
pure function of (seed, rank, epoch, stream), never of process ids or wall time. After
`skip_batches(n)`, DataLoader worker i runs stream (i + n) mod W, because the DataLoader
always polls worker 0 first and batch n belongs to stream n mod W.

Resampled mode (default; ProGIC's "1 % of ImageNet per epoch"): each epoch the shard list
is permuted by (seed, epoch) and dealt to ranks (rank r takes every R-th shard; with fewer
shards than ranks every rank uses all), so ranks draw from disjoint shards. Each worker
draws shards from its rank's share with replacement, forever, through a shuffle buffer, and
stops after its quota. Batches per rank = ceil(epoch_samples / (world_size · batch_size)).

Non-resampled mode: one epoch is one pass. The manifest's sample counts turn the shard
list (permuted per epoch) into one sequence of N samples; rank r, worker w take a
contiguous range of it (only the shards that range touches are read) and shuffle it in
their buffer. Batches per rank = floor(N / (world_size · batch_size)): the last
N mod (world_size · batch_size) samples of each epoch's order are DROPPED (the tail of the
epoch's last shard, a different shard each epoch), so ranks stay disjoint and every other
sample is seen exactly once per pass.

Batch k of a worker is decoded from the k-th window of `batch_size` raw samples of its
(shuffled) stream. A sample that cannot be used (corrupt, not an image, a decompression
bomb, too small under `small_images: skip`) is counted in the batch's `skipped` and
replaced by the next usable samples after the window (decoded again in their own batch).
Because window boundaries never depend on decoding, `skip_batches(n)` drops the raw
samples of n batches without decoding them and resumes exactly where a run stopped; crop
and flip draws are seeded per (seed, rank, epoch, stream, batch, slot) for the same reason.

Lightning 2.x calls `set_epoch` on `dataloader.sampler`, not on the dataset; the loader
therefore carries a sampler that forwards `set_epoch` to the dataset. Workers are not
persistent, so each epoch's iteration sees the new epoch/skip.

Layout: torchvision's `decode_jpeg` returns a (3, H, W) view of interleaved (H, W, 3) pixels,
so a crop's rows are runs of 3·W bytes. Crops are written into the batch as (H, W, 3) rows
(writing them as (3, H, W) transposed each, ≈ 62 µs for a 256² crop here, 5 % of a worker's
time per image), and the batch is a (B, 3, H, W) view with channels-last strides;
`gicl.images.unit_float` makes the float batch contiguous on the training device.

Transport: with workers, each DataLoader iterator gets a `BatchRing` (data/batch_ring.py): a
worker writes its batches into its own shared-memory slots, reused batch after batch, and
sends the slot's number; the main process copies the batch out as it arrives (`StreamLoader`
wraps the DataLoader's iterator), instead of PyTorch's fresh shared segment per batch.

Exact resume: the position in the data is the number of batches the training has consumed,
its iteration i, so a resumed run calls `resume_at(i)` (epoch i // n, skip i mod n, with n
batches per epoch) before Lightning creates the first iterator — which Lightning does
before it calls `set_epoch`, so the epoch must already be right then. Every sample's
order, crop and flip is keyed as above; the DataLoader's own seed (its workers'
`torch.initial_seed()`, from which Lightning derives their numpy and Python seeds) comes
from a generator keyed by (seed, rank, epoch), not from the global RNG, so creating a
loader iterator neither consumes nor depends on the training's random state. The loader
is "stateful" for Lightning (`state_dict`/`load_state_dict`): it records the key of its
order and warns on resume when that key changed (other shards, world size or batch size),
because the resumed run then cannot see what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import deque
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info
from webdataset import shuffle
from webdataset.shardlists import expand_urls

from gicl.errors import RecipeError, UserError

from .batch_ring import BatchRing, SlotRef, shared_memory_free
from .config import resolve_data_config
from .decode import BadImage, decode_rgb, image_bytes
from .sample import sample_shards
from .shards import ShardReader, local_path, manifest_counts
from .transforms import train_crop

log = logging.getLogger("gicl.data")

# Unusable samples in a row after which the data is declared broken rather than skipped.
MAX_CONSECUTIVE_BAD = 10_000
# Shard reads in a row that yield no sample before a resampled stream gives up.
MAX_EMPTY_SHARDS = 100
# Ring slots per worker beyond the DataLoader's prefetch_factor (batches a worker may have
# sent but the main process not yet taken, plus the one it is stacking).
RING_SLOTS_BEYOND_PREFETCH = 1


def build_train_loader(cfg: dict[str, Any], *, batch_size: int, rank: int = 0,
                       world_size: int = 1, seed: int = 0) -> DataLoader:
    """DataLoader of {"image": (B, 3, crop, crop) uint8, "skipped": int (unusable samples
    replaced in this batch)}.

    `cfg` is the recipe's `data` section; `batch_size` is per rank. The pixels stay uint8
    until they reach the training device (`gicl.images.unit_float`, called by the training
    modules' `on_after_batch_transfer`): a quarter of the bytes through the workers' shared
    memory, pinned memory and the host-to-device copy, and no float work in the workers.
    """
    cfg = resolve_data_config(cfg)
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got "
                         f"{batch_size}, {rank}, {world_size}")
    pattern = cfg["train"] if cfg["train"] is not None else sample_shards()
    urls = expand_urls(str(pattern))
    missing = [u for u in urls if (p := local_path(u)) is not None and not p.is_file()]
    if missing:
        raise UserError(f"shard not found: {missing[0]} (data.train = {pattern}); build shards "
                        "with `gicl data shards` or fix the pattern")
    counts = manifest_counts(urls)
    per_step = world_size * batch_size
    if cfg["resampled"]:
        n_batches = math.ceil(_epoch_samples(cfg, counts) / per_step)
    else:
        if counts is None:
            raise RecipeError("data.resampled: false needs the shards' manifest (written by "
                              "`gicl data shards` beside local shards); for remote shards use "
                              "resampled mode with data.dataset_size")
        if cfg["epoch_samples"] is not None or cfg["epoch_fraction"] != 1.0:
            raise RecipeError("data.epoch_samples / data.epoch_fraction apply to resampled mode "
                              "only; with data.resampled: false an epoch is one pass")
        n_batches = sum(counts) // per_step
        if n_batches == 0:
            raise RecipeError(f"the {sum(counts)} samples of {pattern} do not fill one batch of "
                              f"{batch_size} on each of {world_size} rank(s)")
    dataset = TrainStream(urls, counts, cfg, batch_size=batch_size, rank=rank,
                          world_size=world_size, seed=seed, n_batches=n_batches)
    workers = cfg["num_workers"]
    return StreamLoader(dataset, num_workers=workers, pin_memory=torch.cuda.is_available(),
                        prefetch_factor=2 if workers else None)


def _epoch_samples(cfg: dict[str, Any], counts: list[int] | None) -> int:
    if cfg["epoch_samples"] is not None:
        return cfg["epoch_samples"]
    size = sum(counts) if counts is not None else cfg["dataset_size"]
    if size is None:
        raise RecipeError("the shards have no manifest: set data.dataset_size (samples in the "
                          "shards) or data.epoch_samples")
    return max(1, round(size * cfg["epoch_fraction"]))


class TrainStream(IterableDataset):
    """Per-rank batches of training crops; see the module docstring for the order."""

    def __init__(self, urls: list[str], counts: list[int] | None, cfg: dict[str, Any], *,
                 batch_size: int, rank: int, world_size: int, seed: int, n_batches: int) -> None:
        super().__init__()
        self.urls, self.counts, self.cfg = urls, counts, cfg
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.n_batches = seed, n_batches
        self.epoch = 0
        self._skip = 0
        self.shards = ShardReader(cfg["on_truncated_shard"])
        self._warned = False  # one warning per iteration, further skips only counted
        self.ring: BatchRing | None = None  # set by StreamLoader for its workers

    def __len__(self) -> int:
        return self.n_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_batches(self, n: int) -> None:
        """The next iteration starts after the first `n` batches of this rank's epoch."""
        if n < 0:
            raise ValueError(f"cannot skip {n} batches")
        self._skip = int(n)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Not a generator function: epoch and skip are read now, when the DataLoader
        # creates the iterator, not lazily at the first batch.
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader polls worker 0 first; after skipping n batches the next batch (n)
        # belongs to stream n mod W, so DataLoader worker i runs stream (i + n) mod W.
        worker = (worker + self._skip) % workers
        quota = len(range(worker, self.n_batches, workers))
        skip = len(range(worker, min(self._skip, self.n_batches), workers))
        if self.cfg["resampled"]:
            raw = self._shuffled(self._resampled(worker), worker)
        else:
            raw = self._one_pass(worker, workers)
        return self._batches(raw, worker, quota, skip)

    # -- raw sample streams ---------------------------------------------------------------

    def _resampled(self, worker: int) -> Iterator[dict]:
        order = list(range(len(self.urls)))
        random.Random(_seed(self.seed, self.epoch, "deal")).shuffle(order)
        if len(order) >= self.world_size:
            order = order[self.rank::self.world_size]
        rng = random.Random(_seed(self.seed, self.rank, self.epoch, worker, "shards"))
        empty = 0
        while empty < MAX_EMPTY_SHARDS:
            empty += 1
            for sample in self.shards.samples(self.urls[rng.choice(order)]):
                empty = 0
                yield sample
        raise RuntimeError(f"{MAX_EMPTY_SHARDS} shard reads in a row gave no sample: "
                           f"the shards of {self.urls[0]}... are empty")

    def _one_pass(self, worker: int, workers: int) -> Iterator[dict]:
        order = list(range(len(self.urls)))
        random.Random(_seed(self.seed, self.epoch, "pass")).shuffle(order)
        b = self.batch_size
        start = (self.rank * self.n_batches + sum(
            len(range(v, self.n_batches, workers)) for v in range(worker))) * b
        length = len(range(worker, self.n_batches, workers)) * b
        mine = islice(self._cyclic(order, start), length)
        # Replacements for unusable samples continue past the range, unshuffled.
        return chain(self._shuffled(mine, worker), self._cyclic(order, start + length))

    def _cyclic(self, order: list[int], position: int) -> Iterator[dict]:
        """Samples of the epoch's sequence from `position` on, wrapping around at its end."""
        counts = [self.counts[i] for i in order]
        position %= sum(counts)
        index = 0
        while position >= counts[index]:
            position -= counts[index]
            index += 1
        while True:
            url = self.urls[order[index]]
            seen = 0
            for sample in self.shards.samples(url):
                if seen >= position:
                    yield sample
                seen += 1
            if seen != counts[index] and url not in self.shards.truncated_urls:
                raise RuntimeError(f"{url} holds {seen} samples but its manifest says "
                                   f"{counts[index]}: rebuild the shards or the manifest")
            position, index = 0, (index + 1) % len(order)

    def _shuffled(self, samples: Iterator[dict], worker: int) -> Iterator[dict]:
        bufsize = self.cfg["shuffle_buffer"]
        if bufsize <= 1:
            return samples
        rng = random.Random(_seed(self.seed, self.rank, self.epoch, worker, "shuffle"))
        return shuffle(bufsize=bufsize, initial=min(100, bufsize), rng=rng)(iter(samples))

    # -- batches ----------------------------------------------------------------------------

    def _batches(self, raw: Iterator[dict], worker: int, quota: int,
                 skip: int) -> Iterator[dict[str, Any]]:
        """Batch k: the crops of window k's usable samples, then replacements, each written
        into the batch as soon as it is cut, while its decoded image is still in cache (a
        worker stacking 16 crops at the end of a batch spent ≈ 90 µs per image reading them
        back). In a worker the batch is its `BatchRing` slot, sent as a `SlotRef`."""
        source = _Lookahead(raw)
        b, side = self.batch_size, self.cfg["crop"]
        self._warned = False
        info = get_worker_info()
        ring = self.ring if info is not None else None
        produced = 0
        for k in range(quota):
            window = source.take(b)
            if k < skip:
                continue
            if ring is None:
                pixels = torch.empty(b, side, side, 3, dtype=torch.uint8)
            else:
                pixels, index = ring.slot(info.id, produced)
                produced += 1
            filled = 0
            for slot, sample in enumerate(window):
                crop = self._crop(sample, worker, k, slot)
                if crop is not None:
                    pixels[filled].copy_(crop.permute(1, 2, 0))
                    filled += 1
            bad = b - filled
            if bad:
                for crop in self._replacements(source.peek(), bad, worker, k):
                    pixels[filled].copy_(crop.permute(1, 2, 0))
                    filled += 1
            # skipped as an int: a tensor would be one more shared-memory segment and file
            # descriptor per batch sent to the main process (≈ 0.4 ms per batch here)
            if ring is None:
                yield {"image": pixels[:filled].permute(0, 3, 1, 2), "skipped": bad}
            else:
                yield {"image": SlotRef(info.id, index, filled), "skipped": bad}

    def _replacements(self, upcoming: Iterator[dict], n: int, worker: int,
                      batch: int) -> list[torch.Tensor]:
        """The next `n` usable crops after a window (slots b, b+1, ... seed their draws)."""
        out: list[torch.Tensor] = []
        for tries, sample in enumerate(upcoming):
            if tries >= MAX_CONSECUTIVE_BAD:
                raise RuntimeError(f"{MAX_CONSECUTIVE_BAD} samples in a row could not be used "
                                   f"(last: {sample.get('__url__')}); check the data")
            crop = self._crop(sample, worker, batch, self.batch_size + tries)
            if crop is not None:
                out.append(crop)
                if len(out) == n:
                    break
        return out

    def _crop(self, sample: dict, worker: int, batch: int, slot: int) -> torch.Tensor | None:
        """The uint8 training crop of a raw sample, or None (logged once) if it is unusable."""
        cfg = self.cfg
        rng = np.random.default_rng(_seed(self.seed, self.rank, self.epoch, worker, batch, slot))
        try:
            image = decode_rgb(image_bytes(sample), cfg["max_image_pixels"])
            return train_crop(image, crop=cfg["crop"], transform=cfg["transform"],
                              small_images=cfg["small_images"], rng=rng)
        except BadImage as e:
            if not self._warned:
                log.warning("data: skipping %s in %s: %s (further skips are only counted, in "
                            "batch['skipped'])", sample.get("__key__"), sample.get("__url__"), e)
                self._warned = True
            return None


class _Lookahead:
    """An iterator that can also show upcoming items without consuming them."""

    def __init__(self, items: Iterator[dict]) -> None:
        self._items = items
        self._buffer: deque[dict] = deque()

    def take(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if self._buffer:
                out.append(self._buffer.popleft())
            else:
                out.append(next(self._items))
        return out

    def peek(self) -> Iterator[dict]:
        i = 0
        while True:
            if i == len(self._buffer):
                self._buffer.append(next(self._items))
            yield self._buffer[i]
            i += 1


class _EpochSampler(Sampler):
    """The IterableDataset placeholder sampler (endless None) that forwards `set_epoch`."""

    def __init__(self, dataset: TrainStream) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[None]:
        while True:
            yield None

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


class StreamLoader(DataLoader):
    """DataLoader over a TrainStream: batches come batched from the workers (batch_size=None)."""

    def __init__(self, dataset: TrainStream, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, persistent_workers=False, **kwargs)
        self._warned_shared_memory = False
        # DataLoader forbids sampler= with an IterableDataset and locks the attribute after
        # __init__; Lightning only calls set_epoch on `loader.sampler`, so install it here.
        object.__setattr__(self, "sampler", _EpochSampler(dataset))

    def resume_at(self, iteration: int) -> None:
        """The next iteration continues a run that has trained on `iteration` batches."""
        if iteration < 0:
            raise ValueError(f"cannot resume at iteration {iteration}")
        epoch, done = divmod(int(iteration), len(self.dataset))
        self.dataset.set_epoch(epoch)
        self.dataset.skip_batches(done)

    def __iter__(self) -> Iterator[Any]:
        d = self.dataset
        # The workers' base seed is drawn from this generator, not from the global RNG.
        self.generator = torch.Generator().manual_seed(
            _seed(d.seed, d.rank, d.epoch, "loader") % 2**63)
        ring = self._new_ring()
        d.ring = ring
        iterator = super().__iter__()  # workers now hold a copy with the ring and the pending skip
        d.ring = None
        d.skip_batches(0)  # so the skip applies to this iteration only
        return iterator if ring is None else _TakenFromRing(iterator, ring, self.pin_memory)

    def _new_ring(self) -> BatchRing | None:
        """The slots this iterator's workers write their batches into; a ring per iterator,
        since workers of an unfinished earlier one may still write theirs. None without
        workers, or when /dev/shm cannot hold it (touching shared pages beyond its size kills
        a process with SIGBUS): batches then travel PyTorch's way, a warning says so once."""
        if self.num_workers == 0:
            return None
        d = self.dataset
        shape = (self.num_workers, RING_SLOTS_BEYOND_PREFETCH + (self.prefetch_factor or 0),
                 d.batch_size, d.cfg["crop"])
        need, free = BatchRing.nbytes(*shape), shared_memory_free()
        if free is None or need <= free:
            return BatchRing(*shape)
        if not self._warned_shared_memory:
            log.warning("data: the workers' batch slots need %d MB of shared memory, /dev/shm has "
                        "%d MB free: batches go the slower way (a container's --shm-size, or fewer "
                        "data.num_workers, avoids this)", need >> 20, free >> 20)
            self._warned_shared_memory = True
        return None

    def state_dict(self) -> dict[str, Any]:
        """The key of the sample order (Lightning stores it in the checkpoint)."""
        return _order_key(self.dataset)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Warn when the resumed run's sample order differs from the checkpointed one's."""
        now = _order_key(self.dataset)
        changed = [f"{k} {state.get(k)} → {now[k]}" for k in now if state.get(k) != now[k]]
        if changed:
            log.warning("data: the training data changed since the checkpoint (%s): the resumed "
                        "run does not see the samples an uninterrupted run would have",
                        ", ".join(changed))


class _TakenFromRing:
    """A DataLoader iterator whose batches' images come as `SlotRef`s: each is copied out of
    the ring as it arrives (`BatchRing.take`), which frees its slot."""

    def __init__(self, batches: Iterator[dict[str, Any]], ring: BatchRing, pin_memory: bool) -> None:
        self._batches, self._ring, self._pin_memory = batches, ring, pin_memory

    def __iter__(self) -> _TakenFromRing:
        return self

    def __len__(self) -> int:
        return len(self._batches)  # type: ignore[arg-type]

    def __next__(self) -> dict[str, Any]:
        batch = next(self._batches)
        batch["image"] = self._ring.take(batch["image"], self._pin_memory)
        return batch


def _order_key(d: TrainStream) -> dict[str, Any]:
    return {"seed": d.seed, "world_size": d.world_size,  # not the rank: rank 0 saves it
            "batch_size": d.batch_size, "batches_per_epoch": d.n_batches, "shards": len(d.urls)}


def _seed(*parts: object) -> int:
    """A 64-bit seed from a tuple, stable across processes (unlike hash() of str)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")

