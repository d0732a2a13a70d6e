"""MONAI's CacheDataset, with read errors as one line and reproducible random transforms."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
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
    """A cached dataset whose random transforms are seeded per sample from (seed, epoch, index).

    MONAI's random transforms keep their own numpy generators, which the Trainer's checkpoints do
    not capture and which would draw in the order a process happens to load samples. Reseeded
    per sample from the run's seed, the epoch (``set_epoch``, called by the Trainer's loader)
    and the sample's index, augmentation is the same whichever process or loader worker loads a
    sample, so several processes train as one and an interrupted run resumes exactly.
    """

    def __init__(self, items: Sequence[dict[str, Any]], transform: Compose, seed: int = 0) -> None:
        self.transform = transform
        self.dataset = cached(items, transform)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        self.transform.set_random_state(seed=int(state) % (2**31 - 1))
        return self.dataset[index]
