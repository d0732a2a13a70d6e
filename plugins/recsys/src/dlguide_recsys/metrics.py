"""Top-k ranking metrics, vectorised over a batch of users, and torchmetrics wrappers that
average them over users (each user counts once, however many relevant items it has).

For one user, ``hits[j]`` says whether the item ranked ``j + 1`` is relevant and ``n_relevant``
counts the relevant items among the candidates. At cut-off k:

    recall     hits in the top k / n_relevant
    precision  hits in the top k / k
    hit_rate   1 when the top k holds any relevant item
    mrr        1 / rank of the first relevant item in the top k (0 when none)
    ndcg       sum of 1 / log2(rank + 1) over hits, over the same sum for min(n_relevant, k) hits in front
    map        sum of precision@rank over hits / min(n_relevant, k)
    coverage   share of the catalogue that appears in anybody's top k (over all evaluated users)

Users without relevant items are skipped. These are the definitions RecBole uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import Metric

RANKING_METRICS = ("recall", "precision", "ndcg", "hit_rate", "mrr", "map")


def top_k(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best candidate items per row (``B x k``) and whether each slot holds a candidate.

    A row with fewer than ``k`` candidates gets filler slots marked False.
    """
    masked = scores.float().masked_fill(~candidates, float("-inf"))
    top = masked.topk(k, dim=1).indices
    return top, candidates.gather(1, top)


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float32))


def recall(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.float().sum(1) / n_relevant.float()


def precision(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.float().sum(1) / hits.shape[1]


def hit_rate(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    return hits.any(1).float()


def mrr(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    first = hits.float().argmax(1)  # argmax returns the first maximum
    return torch.where(hits.any(1), 1.0 / (first + 1).float(), torch.zeros_like(first, dtype=torch.float32))


def ndcg(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    discounts = _discounts(k, hits.device)
    dcg = (hits.float() * discounts).sum(1)
    ideal = discounts.cumsum(0)[(n_relevant.clamp(max=k) - 1).clamp(min=0)]
    return dcg / ideal


def average_precision(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    k = hits.shape[1]
    h = hits.float()
    precision_at = h.cumsum(1) / torch.arange(1, k + 1, device=hits.device, dtype=torch.float32)
    return (precision_at * h).sum(1) / n_relevant.clamp(max=k).float()


FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "recall": recall, "precision": precision, "ndcg": ndcg, "hit_rate": hit_rate, "mrr": mrr,
    "map": average_precision,
}


class UserAverage(Metric):
    """One ranking metric at cut-off ``k``, averaged over the users that have relevant items.

    ``update(top, hits, valid, n_relevant)`` takes one batch ranked to any cut-off >= k: the item in
    each slot, whether it is relevant, whether it is a candidate at all, and the relevant count.
    """

    full_state_update = False

    def __init__(self, name: str, k: int) -> None:
        super().__init__()
        self.fn, self.k = FUNCTIONS[name], k
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, top: torch.Tensor, hits: torch.Tensor, valid: torch.Tensor, n_relevant: torch.Tensor) -> None:
        keep = n_relevant > 0
        values = self.fn(hits[keep, :self.k], n_relevant[keep])
        self.total += values.double().sum()
        self.users += int(keep.sum())

    def compute(self) -> torch.Tensor:
        return (self.total / self.users.clamp(min=1)).float()


class CatalogueCoverage(Metric):
    """Share of the ``n_items`` catalogue recommended in at least one user's top ``k``."""

    full_state_update = False

    def __init__(self, n_items: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.add_state("counts", torch.zeros(n_items, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, top: torch.Tensor, hits: torch.Tensor, valid: torch.Tensor, n_relevant: torch.Tensor) -> None:
        items = top[:, :self.k][valid[:, :self.k]]
        self.counts += torch.bincount(items.flatten(), minlength=self.counts.numel())

    def compute(self) -> torch.Tensor:
        return (self.counts > 0).float().mean()
