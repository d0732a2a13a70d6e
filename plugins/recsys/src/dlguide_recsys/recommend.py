"""Using a finished recsys.rank run: top items for a user, items similar to an item.

    dlguide recommend RUN --user 196 -k 10        # excludes what the user already rated
    dlguide recommend RUN --item 50 --similar     # nearest items by cosine similarity of item vectors

A run keeps what this needs beside its weights: ``catalogue.json`` (the ids and titles behind
the model's indices) and ``user_items.safetensors`` (each user's rated items, training counts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from dlguide import UsageError

if TYPE_CHECKING:
    import torch

    from dlguide_recsys.rank import RankingTask

CATALOGUE = "catalogue.json"
USER_ITEMS = "user_items.safetensors"


@dataclasses.dataclass
class Recommendations:
    """What was asked (``input``: a user id, or an item with its title), a note when the answer
    is a fallback, and ranked ``items`` ``{"rank", "item", "title", "score"}``: as a dict, the
    same row ``dlguide predict`` gives."""

    input: str
    note: str
    items: list[dict[str, Any]]


def write_catalogue(run_dir: Path, data: Any, train: sp.csr_matrix, seen: sp.csr_matrix) -> list[Path]:
    """Write the id maps, titles and interaction summaries that ``recommend`` reads."""
    import torch
    from safetensors.torch import save_file

    catalogue = run_dir / CATALOGUE
    catalogue.write_text(json.dumps({"user_ids": data.user_ids, "item_ids": data.item_ids,
                                     "titles": data.titles}) + "\n", encoding="utf-8")
    tensors = {
        "seen_indptr": torch.as_tensor(seen.indptr, dtype=torch.int64),
        "seen_indices": torch.as_tensor(seen.indices, dtype=torch.int64),
        "train_item_counts": torch.as_tensor(np.asarray(train.sum(axis=0)).ravel(), dtype=torch.int64),
        "train_user_counts": torch.as_tensor(np.diff(train.indptr), dtype=torch.int64),
    }
    user_items = run_dir / USER_ITEMS
    save_file(tensors, str(user_items))
    return [catalogue, user_items]


@dataclasses.dataclass
class Catalogue:
    user_ids: list[str]
    item_ids: list[str]
    titles: list[str]
    tensors: dict[str, Any]

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}

    @classmethod
    def read(cls, run_dir: Path) -> Catalogue:
        from safetensors.torch import load_file

        path, user_items = run_dir / CATALOGUE, run_dir / USER_ITEMS
        if not path.is_file() or not user_items.is_file():
            raise UsageError(f"{run_dir} lacks {CATALOGUE} or {USER_ITEMS}; it is not a finished recsys.rank run")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["user_ids"], data["item_ids"], data["titles"], load_file(str(user_items)))

    def model_index(self, user: str) -> int:
        """The model's index of ``user``, or -1 when the model learnt nothing about the user: the
        run does not know the id, or knows it without training interactions."""
        index = self.user_index.get(user, -1)
        return index if index >= 0 and int(self.tensors["train_user_counts"][index]) > 0 else -1

    def seen_items(self, user: int) -> Any:
        start, end = self.tensors["seen_indptr"][user:user + 2].tolist()
        return self.tensors["seen_indices"][start:end]


def _rows(catalogue: Catalogue, items: Sequence[int], scores: Sequence[float]) -> list[dict[str, Any]]:
    return [{"rank": r, "item": catalogue.item_ids[i], "title": catalogue.titles[i], "score": round(float(s), 4)}
            for r, (i, s) in enumerate(zip(items, scores), start=1)]


def _check_k(k: int, available: int, what: str) -> None:
    if k < 1:
        raise UsageError(f"-k {k}: expected a number of items >= 1")
    if k > available:
        raise UsageError(f"-k {k} is larger than the {available} {what}")


def top_items(catalogue: Catalogue, user: str, index: int, scores: torch.Tensor, k: int) -> Recommendations:
    """At most ``k`` of the best-scored items the user has not rated, from the model's ``scores``
    of the catalogue for model index ``index``; for index -1, popular items with a note saying why."""
    if index < 0:
        why = "is not in this run's data" if user not in catalogue.user_index else "has no training interactions"
        counts = catalogue.tensors["train_item_counts"].float()
        top = counts.topk(min(k, len(counts)))
        return Recommendations(user, f"user {user} {why}: the {len(top.indices)} most popular items instead",
                               _rows(catalogue, top.indices.tolist(), top.values.tolist()))
    scores = scores.float().clone()
    seen = catalogue.seen_items(index)
    scores[seen] = float("-inf")
    top = scores.topk(min(k, len(scores) - len(seen)))
    return Recommendations(user, "", _rows(catalogue, top.indices.tolist(), top.values.tolist()))


def recommend(task: RankingTask, user: str, k: int) -> Recommendations:
    """The ``k`` best items for ``user``, through the task's own inference path (decode,
    predict_step, the ranking of encode) as ``dlguide predict`` gives its top 10; a ``k``
    beyond the items there are to recommend is a usage error."""
    import torch

    from dlguide import RawInput, model_device

    catalogue = task.catalogue
    n_items = len(catalogue.item_ids)
    _check_k(k, n_items, "items of the catalogue")
    raw = RawInput(value=user)
    user_id, sample = task.user_id(raw), task.decode(raw)
    index = int(sample)
    if index >= 0:
        _check_k(k, n_items - len(catalogue.seen_items(index)), f"items user {user_id} has not rated")
    with torch.inference_mode():
        scores = task.predict_step(sample[None].to(model_device(task.model)))[0].cpu()
    return top_items(catalogue, user_id, index, scores, k)


def similar_items(task: RankingTask, item: str, k: int) -> Recommendations:
    """The ``k`` items nearest to ``item`` by cosine similarity of the model's item vectors."""
    import torch

    from dlguide_recsys.models import Recommender

    catalogue = task.catalogue
    index = catalogue.item_index.get(str(item).strip())
    if index is None:
        raise UsageError(f"item {item!r} is not in this run's catalogue (ids such as "
                         f"{', '.join(catalogue.item_ids[:3])})")
    _check_k(k, len(catalogue.item_ids) - 1, "other items of the catalogue")
    with torch.no_grad():
        vectors = task.module.item_vectors() if isinstance(task.module, Recommender) else None
        if vectors is None:
            raise UsageError(f"model {task.config.model!r} has no item vectors to compare; --similar needs mf, "
                             "neumf, two-tower, als or bpr")
        vectors = torch.nn.functional.normalize(vectors.float().cpu(), dim=1)
        similarity = vectors @ vectors[index]
    similarity[index] = float("-inf")
    top = similarity.topk(k)
    title = catalogue.titles[index]
    return Recommendations(f"{item} ({title})", "", _rows(catalogue, top.indices.tolist(), top.values.tolist()))


def format_rows(rows: Sequence[Mapping[str, Any]], compact: bool = False) -> list[str]:
    if compact:
        return [f"{r['title']} [{r['item']}] {r['score']:.3f}" for r in rows]
    width = max((len(str(r["item"])) for r in rows), default=1)
    title_width = min(60, max((len(r["title"]) for r in rows), default=1))
    return [f"{r['rank']:>3}. {str(r['item']).ljust(width)}  {r['title'][:60].ljust(title_width)}  "
            f"score {r['score']:.4f}" for r in rows]


def cmd_recommend(args: argparse.Namespace) -> int:
    from dlguide import load_run

    if (args.user is None) == (args.item is None):
        raise UsageError("recommend needs either --user ID or --item ID --similar")
    if args.item is not None and not args.similar:
        raise UsageError("--item lists items similar to an item: add --similar")
    if args.user is not None and args.similar:
        raise UsageError("--similar works with --item ID, not --user")
    task = load_run(args.run_dir, runtime=args.runtime)
    if task.name != "recsys.rank":
        raise UsageError(f"{args.run_dir} is a {task.name} run; recommend needs a recsys.rank run")
    if args.user is not None:
        result = recommend(task, args.user, args.k)
        header = f"top {args.k} items for user {args.user} ({task.config.model})"
    else:
        result = similar_items(task, args.item, args.k)
        header = f"{args.k} items most similar to {result.input} ({task.config.model}, cosine similarity)"
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
        return 0
    if result.note:
        print(f"note: {result.note}")
    print(header + ":")
    for line in format_rows(result.items):
        print(line)
    return 0
