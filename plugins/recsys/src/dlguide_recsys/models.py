"""The recommenders of recsys.rank as torch modules with one interface, and their builders.

    model(users, items)  a score per (user, item) pair (any matching shapes): higher ranks first
    model(users)         ``B x n_items`` scores, for ranking the whole catalogue
    item_vectors()       one vector per item for item-to-item similarity, or None

``forward`` is the only entry point a run calls, so a distributed wrapper sees every pass;
``score`` and ``score_all`` are what a model implements behind it.

    popularity  training interactions per item, the same list for everybody (fitted by counting)
    mf          matrix factorisation: user . item + item bias (Rendle et al. 2009, trained with BPR)
    neumf       GMF and an MLP over separate embeddings, joined by one output layer (He et al. 2017, NCF)
    two-tower   a user tower and an item tower over ids and categorical features, scored by a dot product

ALS and BPR from the implicit library keep their factors in ``ImplicitFactors`` (implicit_models.py).

Builders, registered for ``recsys.rank``, are called as ``builder(config, meta) -> nn.Module``
with the run's ``RankingConfig`` and ``meta`` holding:

    n_users, n_items   sizes of the dense user and item indices
    user_features      {"sizes": {feature: embedding rows (values + 1 for "none")},
    item_features       "widths": {feature: most values one user (item) has}}; empty without features
    dataset, source, interactions, notes, protocol   what the data were (for people, not for models)

A model of another package registered for ``recsys.rank`` trains by gradients with the
task's loss if its ``forward(users, items=None)`` follows the interface above; subclassing
``Recommender`` gives it ``score_all`` from ``score`` and the feature codes of the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dlguide import UsageError

if TYPE_CHECKING:
    from dlguide_recsys.rank import RankingConfig

# neumf scores every (user, item) pair through its MLP: chunks keep the activations small
MAX_PAIRS_PER_CHUNK = 1 << 20


class Recommender(nn.Module):
    """Base: ``forward`` dispatches to ``score`` or ``score_all``; ``score_all`` comes from
    ``score`` by default, in chunks of items."""

    n_items: int

    def forward(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.score_all(users) if items is None else self.score(users, items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        items = torch.arange(self.n_items, device=users.device)
        if torch.compiler.is_exporting():  # one block: an exported graph has no loop over a batch-sized count
            chunk = self.n_items
        else:
            chunk = max(1, MAX_PAIRS_PER_CHUNK // max(len(users), 1))
        parts = []
        for start in range(0, self.n_items, chunk):
            block = items[start:start + chunk]
            pairs_u = users[:, None].expand(-1, len(block))
            pairs_i = block[None, :].expand(users.shape[0], -1)  # shape, not len(): a symbolic batch when exported
            parts.append(self.score(pairs_u.reshape(-1), pairs_i.reshape(-1)).view(users.shape[0], len(block)))
        return torch.cat(parts, dim=1)

    def item_vectors(self) -> torch.Tensor | None:
        return None

    def set_feature_codes(self, users: Mapping[str, np.ndarray], items: Mapping[str, np.ndarray]) -> None:
        """Take the users' and items' categorical feature codes (``n x width`` per feature) from the
        data of a run in training; models that read no features ignore them."""


class Popularity(Recommender):
    """Items ranked by their number of training interactions; counts are set by ``fit``, not learnt."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.counts = nn.Parameter(torch.zeros(n_items), requires_grad=False)

    @torch.no_grad()
    def fit(self, item_counts: np.ndarray) -> None:
        self.counts.copy_(torch.as_tensor(item_counts, dtype=torch.float32))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(users.shape[0], -1)


class MatrixFactorization(Recommender):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users(users) * self.items(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users(users) @ self.items.weight.T + self.item_bias.weight.T

    def item_vectors(self) -> torch.Tensor:
        return self.items.weight


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ dropout) between consecutive ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class NeuMF(Recommender):
    """GMF (element-wise product of embeddings) beside an MLP over concatenated embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.n_items = n_items
        half = max(1, hidden[0] // 2)  # the MLP's input is a user and an item embedding side by side
        self.gmf_users, self.gmf_items = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        self.mlp_users, self.mlp_items = nn.Embedding(n_users, half), nn.Embedding(n_items, half)
        self.mlp = mlp([2 * half, *hidden[1:]], dropout)
        self.out = nn.Linear(dim + (hidden[-1] if len(hidden) > 1 else 2 * half), 1)
        for emb in (self.gmf_users, self.gmf_items, self.mlp_users, self.mlp_items):
            nn.init.normal_(emb.weight, std=0.01)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_users(users) * self.gmf_items(items)
        deep = self.mlp(torch.cat([self.mlp_users(users), self.mlp_items(items)], dim=-1))
        return self.out(torch.cat([gmf, deep], dim=-1)).squeeze(-1)

    def item_vectors(self) -> torch.Tensor:
        return torch.cat([self.gmf_items.weight, self.mlp_items.weight], dim=1)


class Tower(nn.Module):
    """Embeddings of an id and of categorical features (a mean over several values), then an MLP."""

    def __init__(self, n: int, dim: int, hidden: Sequence[int], dropout: float, use_ids: bool,
                 feature_sizes: Mapping[str, int], feature_widths: Mapping[str, int]) -> None:
        super().__init__()
        self.ids = nn.Embedding(n, dim) if use_ids else None
        self.names = sorted(feature_sizes)
        # a mean over the values present (code 0 is "none"); nn.EmbeddingBag does the same but its
        # backward pass on CPU is two orders of magnitude slower
        self.features = nn.ModuleDict({name: nn.Embedding(feature_sizes[name], dim, padding_idx=0)
                                       for name in self.names})
        for name in self.names:
            # the codes of every user (item) travel with the weights, so a loaded run needs no data files
            self.register_buffer(f"codes_{name}", torch.zeros(n, feature_widths[name], dtype=torch.int64))
        inputs = dim * (len(self.names) + (1 if use_ids else 0))
        self.mlp = mlp([inputs, *hidden], dropout)
        self.out = nn.Linear(hidden[-1] if hidden else inputs, dim)

    def set_codes(self, codes: Mapping[str, np.ndarray]) -> None:
        for name in self.names:
            getattr(self, f"codes_{name}").copy_(torch.as_tensor(codes[name]))

    def _feature(self, name: str, index: torch.Tensor) -> torch.Tensor:
        codes = getattr(self, f"codes_{name}")[index]
        present = (codes > 0).sum(-1, keepdim=True).clamp(min=1)
        return self.features[name](codes).sum(-2) / present

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        parts = [self.ids(index)] if self.ids is not None else []
        parts += [self._feature(name, index) for name in self.names]
        return self.out(self.mlp(torch.cat(parts, dim=-1)))


class TwoTower(Recommender):
    """User and item towers over ids and features: ids alone is collaborative filtering, features
    alone is content-based (it ranks unseen users and items), both together is hybrid."""

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: Sequence[int], dropout: float, use_ids: bool,
                 user_features: Mapping[str, Mapping[str, int]], item_features: Mapping[str, Mapping[str, int]]) -> None:
        super().__init__()
        self.n_items = n_items
        self.user_tower = Tower(n_users, dim, hidden, dropout, use_ids, user_features["sizes"],
                                user_features["widths"])
        self.item_tower = Tower(n_items, dim, hidden, dropout, use_ids, item_features["sizes"],
                                item_features["widths"])

    def set_feature_codes(self, users: Mapping[str, np.ndarray], items: Mapping[str, np.ndarray]) -> None:
        self.user_tower.set_codes(users)
        self.item_tower.set_codes(items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_tower(users) * self.item_tower(items)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_tower(users) @ self.item_vectors().T

    def item_vectors(self) -> torch.Tensor:
        return self.item_tower(torch.arange(self.n_items, device=self.item_tower.out.weight.device))


# -- builders: (config, meta) -> module ----------------------------------------------------------
def build_popularity(config: RankingConfig, meta: Mapping[str, Any]) -> Popularity:
    return Popularity(int(meta["n_users"]), int(meta["n_items"]))


def build_mf(config: RankingConfig, meta: Mapping[str, Any]) -> MatrixFactorization:
    return MatrixFactorization(int(meta["n_users"]), int(meta["n_items"]), config.embedding_dim)


def build_neumf(config: RankingConfig, meta: Mapping[str, Any]) -> NeuMF:
    return NeuMF(int(meta["n_users"]), int(meta["n_items"]), config.embedding_dim, config.hidden, config.dropout)


def build_two_tower(config: RankingConfig, meta: Mapping[str, Any]) -> TwoTower:
    """The codes of the features start at zero: the task sets them from the data while training,
    and a finished run's weights carry them (buffers)."""
    if not config.use_ids and not (meta["user_features"]["sizes"] and meta["item_features"]["sizes"]):
        raise UsageError("two-tower with use_ids=false needs user and item features (users.csv and "
                         "items.csv, or the MovieLens user and movie files)")
    return TwoTower(int(meta["n_users"]), int(meta["n_items"]), config.embedding_dim, config.hidden, config.dropout,
                    config.use_ids, meta["user_features"], meta["item_features"])
