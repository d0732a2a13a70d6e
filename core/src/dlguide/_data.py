"""Data loading the Trainer owns: a seeded per-epoch order that can start mid-epoch,
device selection and moving batches to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dlguide._errors import UsageError


class EpochSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, drawn like ``RandomSampler`` from the
    loader's generator, optionally skipping the first ``start`` samples (exact mid-epoch resume)."""

    def __init__(self, size: int, shuffle: bool, generator: torch.Generator | None) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = generator
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=self.generator).tolist() if self.shuffle else range(self.size)
        start, self.start = self.start, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.size - self.start


class SeededLoader:
    """A DataLoader whose order in epoch ``e`` depends only on ``(seed, e)``."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int,
                 pin_memory: bool, limit: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        self.seed = seed
        self.generator = torch.Generator()
        self.sampler = EpochSampler(len(dataset), shuffle, self.generator)  # type: ignore[arg-type]
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, generator=self.generator,
            num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False, collate_fn=collate_fn,
        )
        self.batch_size = batch_size
        full = len(self.loader)
        self.num_batches = min(full, limit) if limit else full

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[Any]:
        """Iterate the batches of ``epoch``, starting after ``skip_batches`` of them."""
        self.generator.manual_seed(self.seed + epoch)
        self.sampler.start = skip_batches * self.batch_size
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
