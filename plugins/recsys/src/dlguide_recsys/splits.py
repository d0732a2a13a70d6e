"""Train/validation/test splits of interactions, seeded.

    random         per user, a shuffled ratio split (80/10/10 by default): every user is in every part
    leave-one-out  per user by time, the last interaction for test and the one before for validation (NCF)
    temporal       one global time cut at the ratio quantiles: the future is predicted from the past

``dlguide cv`` folds are grouped by user (:func:`user_fold`): the test part stays, and each fold's
users hold out part of their training and validation interactions for validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dlguide import UsageError, kfold
from dlguide_recsys.config import SPLITS
from dlguide_recsys.interactions import Interactions


@dataclasses.dataclass
class Split:
    """Rows of the interaction arrays in each part, and a one-line description of how."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str


def _rank_within_user(users: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each interaction: its 0-based position among its user's interactions ordered by ``keys``,
    and its user's interaction count."""
    order = np.lexsort((keys, users))
    counts = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank, counts[users]


def random_split(data: Interactions, ratios: Sequence[float], seed: int) -> Split:
    rng = np.random.default_rng(seed)
    rank, n = _rank_within_user(data.users, rng.random(len(data.users)))
    # every user keeps at least one training interaction; rounding gives short histories none to test
    train_end = np.maximum(np.round(n * ratios[0]), 1)
    val_end = np.maximum(np.round(n * (ratios[0] + ratios[1])), train_end)
    parts = np.where(rank < train_end, 0, np.where(rank < val_end, 1, 2))
    pct = "/".join(f"{r * 100:g}" for r in ratios)
    return _from_parts(parts, f"random per-user {pct} (seed {seed})")


def leave_one_out(data: Interactions, ratios: Sequence[float]) -> Split:
    if data.timestamps is None:
        raise UsageError("split 'leave-one-out' orders each user's interactions by time, but some or all "
                         "interactions have no timestamps; use split=random")
    rank, n = _rank_within_user(data.users, data.timestamps)
    from_end = n - 1 - rank
    with_val = ratios[1] > 0
    # users with too few interactions to hold one out keep them all for training
    enough = n >= (3 if with_val else 2)
    parts = np.zeros(len(rank), dtype=np.int64)
    parts[enough & (from_end == 0)] = 2
    if with_val:
        parts[enough & (from_end == 1)] = 1
    held = "last interaction for test" + (", the one before for validation" if with_val else "")
    return _from_parts(parts, f"leave-one-out by time per user ({held})")


def temporal_split(data: Interactions, ratios: Sequence[float]) -> Split:
    if data.timestamps is None:
        raise UsageError("split 'temporal' cuts at a point in time, but some or all interactions have "
                         "no timestamps; use split=random")
    t_val, t_test = np.quantile(data.timestamps, [ratios[0], ratios[0] + ratios[1]])
    parts = np.where(data.timestamps < t_val, 0, np.where(data.timestamps < t_test, 1, 2))
    if ratios[1] == 0:
        parts[parts == 1] = 2
    pct = "/".join(f"{r * 100:g}" for r in ratios)
    return _from_parts(parts, f"temporal: global time cut at the {pct} quantiles of the timestamps")


def _from_parts(parts: np.ndarray, description: str) -> Split:
    return Split(*(np.flatnonzero(parts == p) for p in (0, 1, 2)), description=description)


def split_interactions(data: Interactions, kind: str, ratios: Sequence[float], seed: int) -> Split:
    if kind == "random":
        split = random_split(data, ratios, seed)
    elif kind == "leave-one-out":
        split = leave_one_out(data, ratios)
    elif kind == "temporal":
        split = temporal_split(data, ratios)
    else:
        raise UsageError(f"unknown split {kind!r}; expected one of {', '.join(SPLITS)}")
    source = f" in {data.source}" if data.source else ""
    for what, count in (("user", data.n_users), ("item", data.n_items)):
        if count < 2:  # one user: nothing to learn from others; one item: nothing to rank
            raise UsageError(f"the interactions{source} involve {count} {what} only; a recommender needs at least "
                             f"2 users and 2 items")
    return split


def user_fold(data: Interactions, split: Split, kind: str, ratios: Sequence[float], folds: int, fold: int,
              seed: int) -> Split:
    """Fold ``fold`` of ``folds`` of ``split``'s pooled training and validation interactions, grouped
    by user: the users who have any are dealt into the folds (with ``seed``), so each user is
    validated in exactly one fold. The fold's users hold out their validation share of the pool as
    ``kind`` would (leave-one-out: the latest; temporal: the latest share; random: a random share)
    and keep the rest, never less than one, for training; every other user trains on all of theirs.
    The test part is ``split``'s."""
    pooled = np.sort(np.concatenate([split.train, split.val]))
    users = data.users[pooled]
    present = np.unique(users)
    _, held_positions = kfold([0] * len(present), folds, fold, seed)
    in_fold = np.isin(users, present[held_positions])
    if kind == "random":
        keys = np.random.default_rng(seed).random(len(pooled))
    else:  # the split's own order: by time
        assert data.timestamps is not None  # the split itself refused interactions without timestamps
        keys = data.timestamps[pooled]
    rank, n = _rank_within_user(users, keys)
    if kind == "leave-one-out":
        held_count = (n >= 2).astype(np.int64)
    else:
        share = ratios[1] / (ratios[0] + ratios[1]) if ratios[1] > 0 else 1 / folds
        held_count = np.minimum(np.round(n * share), n - 1)
    is_val = in_fold & (rank >= n - held_count)
    description = f"{split.description}; cv fold {fold + 1} of {folds} grouped by user (seed {seed})"
    return Split(pooled[~is_val], pooled[is_val], split.test, description)
