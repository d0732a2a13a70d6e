"""Seeded, stratified hold-out splits: the same function for images, texts and cases."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence


def stratified_split(labels: Sequence[Hashable], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices of ``labels`` cut into ``len(fractions) + 1`` parts: one part per fraction (a share
    of every class, rounded, at least one sample of a class that has more than one when the
    fraction is above 0), and the rest first. Each part lists its indices in ascending order.

    The cut depends only on ``labels``, ``fractions`` and ``seed``: the same call gives the
    same parts on every machine.
    """
    rng = random.Random(seed)
    by_class: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_class, key=str):
        members = list(by_class[label])
        rng.shuffle(members)
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            take = round(len(members) * fraction)
            if fraction > 0 and take == 0 and len(members) - start > 1:
                take = 1
            take = min(take, max(0, len(members) - start - 1))  # every class keeps a sample in the rest
            parts[part].extend(members[start:start + take])
            start += take
        parts[0].extend(members[start:])
    return [sorted(part) for part in parts]


def kfold(labels: Sequence[Hashable], folds: int, fold: int, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held out) indices of ``labels``: fold ``fold`` of ``folds`` stratified folds, each
    class's samples shuffled with ``seed`` and dealt to the folds in turn (the deal of each class
    starts where the last one ended, so fold sizes differ by at most one). Give every sample the
    same label for a plain K-fold. The folds of one ``seed`` partition the samples."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}")
    rng = random.Random(seed)
    by_class: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    held: list[int] = []
    position = 0
    for label in sorted(by_class, key=str):
        members = list(by_class[label])
        rng.shuffle(members)
        held.extend(m for j, m in enumerate(members) if (position + j) % folds == fold)
        position += len(members)
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def cv_fold(config: object, labels: Sequence[Hashable]) -> tuple[list[int], list[int]] | None:
    """For a task's ``build_data``: the (train, val) indices of the pooled training and validation
    samples for the fold ``dlguide cv`` set in ``config`` (``cv_folds``, ``cv_fold``, drawn with
    :func:`cv_seed`), or None outside cross-validation (the task splits as it always does)."""
    folds = int(getattr(config, "cv_folds", 0) or 0)
    if folds < 2:
        return None
    return kfold(labels, folds, int(getattr(config, "cv_fold", 0)), cv_seed(config))


def cv_seed(config: object) -> int:
    """The seed that draws the folds of ``dlguide cv``'s repeat: ``seed + cv_repeat``. A task that
    cuts its own folds (by group) draws them with it; its test split keeps ``seed``."""
    return int(getattr(config, "seed", 0)) + int(getattr(config, "cv_repeat", 0) or 0)
