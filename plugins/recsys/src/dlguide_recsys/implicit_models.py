"""ALS and BPR from the implicit library, one implicit iteration per Trainer epoch.

The factors live in an ``ImplicitFactors`` module (frozen parameters: implicit fits them, no
gradient does), so checkpoints, best-epoch selection, resume and the safetensors weights work
as for the torch models. Each epoch hands the current factors to a fresh implicit model, runs
one iteration (an ALS sweep, a BPR pass over the interactions) and copies the factors back.
implicit's GPU implementations are used when the run's device is CUDA and implicit was built with it.

``build_als`` and ``build_bpr`` are registered for ``recsys.rank`` as ``builder(config, meta)``;
``meta`` is described in models.py. The task fits the module with ``fit_iteration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from dlguide_recsys.models import Recommender

if TYPE_CHECKING:
    from dlguide_recsys.rank import RankingConfig


class ImplicitFactors(Recommender):
    """User and item factors fitted by implicit; BPR's have one more column (the item bias,
    matched by a constant 1 in the user factors)."""

    def __init__(self, n_users: int, n_items: int, width: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.user_factors = nn.Parameter(torch.zeros(n_users, width), requires_grad=False)
        self.item_factors = nn.Parameter(torch.zeros(n_items, width), requires_grad=False)
        self.register_buffer("iterations", torch.zeros((), dtype=torch.int64))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users] * self.item_factors[items]).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users] @ self.item_factors.T

    def item_vectors(self) -> torch.Tensor:
        return self.item_factors


def build_als(config: RankingConfig, meta: Mapping[str, Any]) -> ImplicitFactors:
    return ImplicitFactors(int(meta["n_users"]), int(meta["n_items"]), config.embedding_dim)


def build_bpr(config: RankingConfig, meta: Mapping[str, Any]) -> ImplicitFactors:
    # implicit's BPR adds the item bias as one more factor
    return ImplicitFactors(int(meta["n_users"]), int(meta["n_items"]), config.embedding_dim + 1)


def _implicit_model(kind: str, factors: int, settings: dict[str, float], seed: int, use_gpu: bool) -> Any:
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    if kind == "als":
        return AlternatingLeastSquares(factors=factors, regularization=settings["regularization"],
                                       alpha=settings["alpha"], iterations=1, calculate_training_loss=True,
                                       random_state=seed, use_gpu=use_gpu)
    return BayesianPersonalizedRanking(factors=factors, learning_rate=settings["learning_rate"],
                                       regularization=settings["regularization"], iterations=1,
                                       random_state=seed, use_gpu=use_gpu)


def fit_iteration(module: ImplicitFactors, kind: str, user_items: sp.csr_matrix, factors: int,
                  settings: dict[str, float], seed: int) -> dict[str, float]:
    """Run one implicit iteration from the module's factors (implicit's own start when there are
    none yet) and store the result; returns what implicit reports about it."""
    import implicit.gpu
    from threadpoolctl import threadpool_limits

    use_gpu = module.user_factors.device.type == "cuda" and implicit.gpu.HAS_CUDA
    report: dict[str, float] = {}

    def callback(iteration: int, seconds: float, *stats: Any) -> None:
        if kind == "als" and stats and stats[0] is not None:
            report["loss"] = float(stats[0])
        elif kind == "bpr" and len(stats) == 2:
            correct, skipped = stats
            report["bpr_correct"] = correct / max(user_items.nnz - skipped, 1)

    # implicit parallelises itself; a threaded BLAS underneath it only oversubscribes the cores
    with threadpool_limits(1, "blas"):
        # the seed changes per iteration so that BPR draws new samples each epoch, reproducibly
        model = _implicit_model(kind, factors, settings, seed + int(module.iterations), use_gpu)
        if int(module.iterations) > 0:
            user, item = module.user_factors.cpu().numpy(), module.item_factors.cpu().numpy()
            if use_gpu:
                user, item = implicit.gpu.Matrix(user), implicit.gpu.Matrix(item)
            model.user_factors, model.item_factors = user, item
        model.fit(user_items, show_progress=False, callback=callback)
    if use_gpu:
        model = model.to_cpu()
    with torch.no_grad():
        module.user_factors.copy_(torch.as_tensor(np.asarray(model.user_factors)))
        module.item_factors.copy_(torch.as_tensor(np.asarray(model.item_factors)))
        module.iterations += 1
    return report
