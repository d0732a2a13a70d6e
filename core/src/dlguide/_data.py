"""Data loading the Trainer owns: a seeded per-epoch order that can start mid-epoch,
device selection and moving batches to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dlguide._errors import UsageError


class EpochBatches(Sampler[list[int]]):
    """The batches of one epoch as index lists: the seeded order (like ``RandomSampler``, drawn
    from the loader's generator) or the dataset's own, cut into batches of ``batch_size``.

    Among ``world`` processes, ``batch_size`` is the global batch: process ``rank`` takes its
    contiguous part of each one, so the processes together see exactly what one process sees.
    ``start`` skips the epoch's first batches (exact mid-epoch resume). With ``shard_whole``
    (evaluation) each process instead takes one contiguous share of the whole dataset, so that
    every sample is counted exactly once, without padding.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                 rank: int = 0, world: int = 1, shard_whole: bool = False) -> None:
        self.size, self.batch_size, self.shuffle, self.generator = size, batch_size, shuffle, generator
        self.rank, self.world, self.shard_whole = rank, world, shard_whole
        self.start = 0

    def _order(self) -> list[int]:
        return torch.randperm(self.size, generator=self.generator).tolist() if self.shuffle else list(range(self.size))

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()  # drawn when the epoch's iteration begins, as RandomSampler does
        start, self.start = self.start, 0
        if self.shard_whole:
            begin, end = _bounds(self.size, self.rank, self.world)
            mine = order[begin:end]
            step = max(1, self.batch_size // self.world)
            for i in range(start * step, len(mine), step):
                yield mine[i:i + step]
            return
        for first in range(start * self.batch_size, self.size, self.batch_size):
            batch = order[first:first + self.batch_size]
            if len(batch) < self.world:  # a tail smaller than the processes: no process may go empty
                return
            begin, end = _bounds(len(batch), self.rank, self.world)
            yield batch[begin:end]

    def rows(self, batch_idx: int) -> tuple[int, int, int]:
        """Where this process's part of training batch ``batch_idx`` lies in the global batch:
        ``(begin, end, global_size)``; a task that draws per-sample random numbers (negatives)
        draws them for the global batch and keeps its rows, so any number of processes draws
        what one process draws."""
        total = min(self.batch_size, self.size - batch_idx * self.batch_size)
        return (*_bounds(total, self.rank, self.world), total)

    def __len__(self) -> int:
        if self.shard_whole:
            step = max(1, self.batch_size // self.world)
            begin, end = _bounds(self.size, self.rank, self.world)
            return -(-(end - begin) // step)
        full, tail = divmod(self.size, self.batch_size)
        return full + (1 if tail >= self.world else 0)


def _bounds(length: int, rank: int, world: int) -> tuple[int, int]:
    """Where process ``rank``'s contiguous share of ``length`` items begins and ends (the first
    ``length % world`` shares are one longer)."""
    size, extra = divmod(length, world)
    begin = rank * size + min(rank, extra)
    return begin, begin + size + (1 if rank < extra else 0)


class SeededLoader:
    """A DataLoader whose order in epoch ``e`` depends only on ``(seed, e)``, whatever the number
    of processes (``rank`` of ``world``) that share it. A dataset with a ``set_epoch(epoch)``
    method is told the epoch before each one, so that its random augmentation can be a function
    of (seed, epoch, sample) too: the same in any process, in any worker and after a resume."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                 pin_memory: bool, limit: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                 rank: int = 0, world: int = 1, evaluation: bool = False) -> None:
        self.seed = seed
        self.generator = torch.Generator()
        self.sampler = EpochBatches(len(dataset), batch_size, shuffle, self.generator,  # type: ignore[arg-type]
                                    rank, world, shard_whole=evaluation)
        self.loader = DataLoader(
            dataset, batch_sampler=self.sampler, generator=self.generator,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False, collate_fn=collate_fn,
        )
        self.batch_size = batch_size
        full = len(self.sampler)
        self.num_batches = min(full, limit) if limit else full

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Any]:
        """Iterate the batches of ``epoch``, starting after ``skip_batches`` of them."""
        self.generator.manual_seed(self.seed + epoch)
        self.sampler.start = skip_batches
        set_epoch = getattr(self.loader.dataset, "set_epoch", None)
        if callable(set_epoch):  # PyTorch's convention (DistributedSampler, datasets' IterableDataset)
            set_epoch(epoch)
        for i, batch in enumerate(self.loader, start=skip_batches):
            if i >= self.num_batches:
                break
            yield batch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for a missing device is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but torch sees no CUDA device; use --set device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device 'mps' was asked for but is not available; use --set device=cpu")
    return torch.device(name)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside a batch (nested tuples, lists, dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device, non_blocking) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch
