"""The torch-side data of recsys.rank: training pairs, seeded negative sampling and the
per-user rows that evaluation ranks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset


class PositivePairs(Dataset):
    """(user, item) training interactions; negatives are drawn per batch by ``NegativeSampler``."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users = torch.as_tensor(users, dtype=torch.int64)
        self.items = torch.as_tensor(items, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users[index], self.items[index]


class WholeMatrix(Dataset):
    """One sample per process and epoch, for models fitted on the whole training matrix at once
    (ALS, BPR, popularity): each epoch is one step in which every process takes part."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes

    def __len__(self) -> int:
        return self.processes

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index)


class NegativeSampler:
    """Uniform random items a user has no training interaction with, drawn from a generator seeded
    by (seed, epoch, batch): new negatives every epoch, the same ones when a run is repeated or resumed."""

    ROUNDS = 50  # redraws of the items that turned out to be positives (a user who rated nearly everything keeps some)

    def __init__(self, train: sp.csr_matrix, seed: int) -> None:
        coo = train.tocoo()
        self.n_items = train.shape[1]
        self.keys = torch.as_tensor(np.sort(coo.row.astype(np.int64) * self.n_items + coo.col), dtype=torch.int64)
        self.seed = seed

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = self.keys.to(users.device)
        wanted = users * self.n_items + items
        at = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
        return keys[at] == wanted

    def sample(self, users: torch.Tensor, n: int, epoch: int, batch_idx: int,
               rows: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``len(users) x n`` negative items.

        ``rows`` = (begin, end, size): these users are rows begin..end of a global batch of
        ``size`` shared by several processes. Each draw is made for the whole global batch and
        every item keeps its position, so a process draws exactly the negatives one process
        would draw for the same rows (a redraw replaces a clash by the next draw at its position).
        """
        begin, end, size = rows if rows is not None else (0, len(users), len(users))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 100_003 + batch_idx)
        users = users[:, None].expand(-1, n)

        def draw() -> torch.Tensor:
            return torch.randint(self.n_items, (size, n), generator=generator)[begin:end].to(users.device)

        items = draw()
        for _ in range(self.ROUNDS):
            clash = self.is_positive(users, items)
            if not bool(clash.any()):
                break
            items = torch.where(clash, draw(), items)
        return items


class RankingRows(Dataset):
    """One row per evaluated user: (user, relevant items, candidate items) as 0/1 rows over the catalogue.

    ``mask`` lists per user the items to exclude (full ranking) or, with ``include=True``, the
    only items to rank (sampled ranking: the relevant ones and the sampled negatives).
    """

    def __init__(self, users: np.ndarray, relevant: sp.csr_matrix, mask: sp.csr_matrix, include: bool) -> None:
        self.users, self.relevant, self.mask, self.include = users, relevant, mask, include

    def __len__(self) -> int:
        return len(self.users)

    @staticmethod
    def _row(matrix: sp.csr_matrix, user: int) -> torch.Tensor:
        row = torch.zeros(matrix.shape[1], dtype=torch.bool)
        row[torch.as_tensor(matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]], dtype=torch.int64)] = True
        return row

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        user = int(self.users[index])
        mask = self._row(self.mask, user)
        return torch.tensor(user), self._row(self.relevant, user), mask if self.include else ~mask


def sample_unseen(seen: sp.csr_matrix, users: np.ndarray, n: int, seed: int) -> sp.csr_matrix:
    """A users x items 0/1 matrix with ``n`` random items per listed user that it never interacted with."""
    rng = np.random.default_rng(seed)
    n_items = seen.shape[1]
    rows, cols = [], []
    for user in users:
        unseen = np.setdiff1d(np.arange(n_items), seen.indices[seen.indptr[user]:seen.indptr[user + 1]])
        picked = unseen if len(unseen) <= n else rng.choice(unseen, size=n, replace=False)
        rows.append(np.full(len(picked), user))
        cols.append(picked)
    row, col = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, int), np.zeros(0, int))
    return sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=seen.shape)
