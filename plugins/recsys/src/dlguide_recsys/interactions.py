"""From raw ratings to indexed implicit feedback: deduplication, the rating threshold,
k-core filtering, dense user/item indices and encoded categorical features."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dlguide import UsageError
from dlguide_recsys.datasets import RawData

log = logging.getLogger("dlguide_recsys")


@dataclasses.dataclass
class Features:
    """Categorical features of users or items: ``codes[name]`` is ``n x width`` int64, 0 = none;
    ``vocab[name][code - 1]`` is the value a code stands for."""

    codes: dict[str, np.ndarray]
    vocab: dict[str, list[str]]

    @property
    def sizes(self) -> dict[str, int]:
        """Embedding rows each feature needs (its values plus the 0 of 'none')."""
        return {name: len(values) + 1 for name, values in self.vocab.items()}

    @property
    def widths(self) -> dict[str, int]:
        return {name: int(codes.shape[1]) for name, codes in self.codes.items()}


@dataclasses.dataclass
class Interactions:
    """Positive feedback as parallel arrays over dense indices, with what the ids mean."""

    users: np.ndarray  # int64 user index of each interaction
    items: np.ndarray  # int64 item index
    timestamps: np.ndarray | None  # float64, None when the data has no times
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    user_features: Features
    item_features: Features
    notes: list[str]
    source: str = ""  # where the interactions were read, for messages

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def matrix(self, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """The users x items 0/1 matrix of all interactions, or of those at ``rows``."""
        users, items = (self.users, self.items) if rows is None else (self.users[rows], self.items[rows])
        data = np.ones(len(users), dtype=np.float32)
        return sp.csr_matrix((data, (users, items)), shape=(self.n_users, self.n_items))


def _id_order(ids: pd.Index) -> list[str]:
    """Ids sorted numerically when they all are numbers (1, 2, 10), as text otherwise."""
    values = list(ids)
    if all(v.isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def deduplicate(frame: pd.DataFrame, source: str, notes: list[str]) -> pd.DataFrame:
    """Keep one row per (user, item): the latest when there are timestamps, else the last."""
    if frame["timestamp"].notna().all():
        frame = frame.sort_values("timestamp", kind="stable")
    dupes = frame.duplicated(["user", "item"], keep="last")
    if dupes.any():
        note = (f"{int(dupes.sum())} duplicate (user, item) interactions in {source} were dropped, "
                "keeping the latest of each")
        notes.append(note)
        log.warning("%s", note)
        frame = frame[~dupes]
    return frame


def k_core(frame: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Drop users and items with too few interactions until every one left has enough."""
    while min_user > 1 or min_item > 1:
        user_counts = frame["user"].map(frame["user"].value_counts())
        item_counts = frame["item"].map(frame["item"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            break
        frame = frame[keep]
    return frame


def encode_features(table: pd.DataFrame | None, ids: list[str]) -> Features:
    """Encode each column of ``table`` (values joined by ``|``) for ``ids`` in order; unknown ids get 0s."""
    codes: dict[str, np.ndarray] = {}
    vocab: dict[str, list[str]] = {}
    if table is None:
        return Features(codes, vocab)
    table = table[~table.index.duplicated(keep="first")].reindex(ids).fillna("")
    for column in table.columns:
        if column == "title":
            continue
        values = [[v.strip() for v in str(cell).split("|") if v.strip()] for cell in table[column]]
        names = sorted({v for row in values for v in row})
        if not names:
            continue
        index = {name: code for code, name in enumerate(names, start=1)}
        width = max(len(row) for row in values)
        matrix = np.zeros((len(ids), width), dtype=np.int64)
        for r, row in enumerate(values):
            matrix[r, :len(row)] = [index[v] for v in row]
        codes[str(column)], vocab[str(column)] = matrix, names
    return Features(codes, vocab)


def build_interactions(raw: RawData, *, rating_threshold: float = 0.0, min_user_interactions: int = 0,
                       min_item_interactions: int = 0) -> Interactions:
    """Clean ``raw`` into indexed positives: ratings >= ``rating_threshold`` count as positives."""
    notes: list[str] = []
    frame = deduplicate(raw.interactions, raw.source, notes)
    if rating_threshold > 0:
        if not raw.has_ratings:
            raise UsageError(f"rating_threshold={rating_threshold:g} needs ratings, but {raw.source} has none; "
                             "set rating_threshold=0")
        unrated = int(frame["rating"].isna().sum())
        if unrated:
            raise UsageError(f"rating_threshold={rating_threshold:g} needs a rating on every interaction, but "
                             f"{unrated} in {raw.source} have none; fill them in or set rating_threshold=0")
        frame = frame[frame["rating"] >= rating_threshold]
    frame = k_core(frame, min_user_interactions, min_item_interactions)
    if frame.empty:
        raise UsageError(f"no interactions left in {raw.source} after rating_threshold={rating_threshold:g}, "
                         f"min_user_interactions={min_user_interactions} and "
                         f"min_item_interactions={min_item_interactions}")
    user_ids = _id_order(pd.Index(frame["user"].unique()))
    item_ids = _id_order(pd.Index(frame["item"].unique()))
    users = pd.Index(user_ids).get_indexer(frame["user"]).astype(np.int64)
    items = pd.Index(item_ids).get_indexer(frame["item"]).astype(np.int64)
    titles = item_ids
    if raw.items is not None and "title" in raw.items.columns:
        named = raw.items["title"][~raw.items.index.duplicated(keep="first")]
        titles = [t if t else i for t, i in zip(named.reindex(item_ids).fillna("").astype(str), item_ids)]
    timestamps = frame["timestamp"].to_numpy(np.float64) if raw.has_timestamps else None
    return Interactions(users, items, timestamps, user_ids, item_ids, list(titles),
                        encode_features(raw.users, user_ids), encode_features(raw.items, item_ids), notes,
                        raw.source)
