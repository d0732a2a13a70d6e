"""MONAI's CacheDataset, with read errors as one line and reproducible random transforms."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from monai.transforms import Compose
from torch.utils.data import Dataset

from dlguide_medical.files import usage_errors_unwrapped


def cached(items: Sequence[dict[str, Any]], transform: Compose) -> CacheDataset:
    """Run ``transform`` up to its first random step on every item now, keeping the results in memory."""
    with usage_errors_unwrapped():
        return CacheDataset(list(items), transform, num_workers=max(1, min(4, os.cpu_count() or 1)),
                            progress=False)


class SeededCache(Dataset):
    """A cached dataset whose random transforms draw their seeds from torch's global generator.

    MONAI's random transforms keep their own numpy generators, which the Trainer's checkpoints do
    not capture; reseeding them per sample from torch (whose state is checkpointed, and which the
    DataLoader seeds per worker) makes augmentation reproducible and an interrupted run resume exactly.
    """

    def __init__(self, items: Sequence[dict[str, Any]], transform: Compose) -> None:
        self.transform = transform
        self.dataset = cached(items, transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        self.transform.set_random_state(seed=int(torch.randint(2**31 - 1, ())))
        return self.dataset[index]
