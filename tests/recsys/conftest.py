"""Small interaction files written in the real formats, and a runtime with the recsys plugin only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dlguide_recsys.plugin
from dlguide._plugins import load_runtime

GENRES = ("Comedy", "Drama")


def write_clustered(folder: Path, n_users: int = 60, n_items: int = 40, per_user: int = 14, seed: int = 0,
                    user_prefix: str = "u") -> Path:
    """interactions.csv (+ users.csv, items.csv) where two groups of users like two halves of the
    items: a model that learns who likes what beats ranking by popularity. User ``n`` (even: the
    first half) is named ``{user_prefix}{n}``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    half = n_items // 2
    lines = ["user,item,rating,timestamp"]
    for u in range(n_users):
        group = u % 2
        # a skewed choice inside the user's half makes some items popular
        weights = np.linspace(2.0, 1.0, half)
        items = rng.choice(half, size=per_user, replace=False, p=weights / weights.sum()) + group * half
        for t, i in enumerate(items):
            lines.append(f"{user_prefix}{u},i{i},{rng.integers(1, 6)},{1000 + 10 * t + u}")
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    users = ["user,group,age"] + [f"{user_prefix}{u},g{u % 2},{20 + u % 3}" for u in range(n_users)]
    (folder / "users.csv").write_text("\n".join(users) + "\n")
    items = ["item,title,genres"] + [f"i{i},Film {i},{GENRES[i // half]}|Color" for i in range(n_items)]
    (folder / "items.csv").write_text("\n".join(items) + "\n")
    return folder


@pytest.fixture(scope="session")
def runtime():
    return load_runtime(strict=True, disable=(), extra={"recsys": dlguide_recsys.plugin}, use_entry_points=False)


@pytest.fixture(scope="session")
def clustered_dir(tmp_path_factory) -> Path:
    return write_clustered(tmp_path_factory.mktemp("clustered"))
