"""Pictures a person would rather look at than read: learning curves, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure rendered with Agg, for plugins' own pictures too."""
    # the object-oriented API renders with Agg without touching pyplot's global state,
    # so it is safe in any process, with or without a display
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def learning_curves(history: Sequence[dict[str, float]], path: Path, title: str = "") -> Path:
    """Loss per epoch (train and val) on the left, every other per-epoch metric on the right."""
    epochs = [int(row["epoch"]) for row in history]
    keys = [k for k in history[-1] if k.count("/") == 1]
    losses = [k for k in keys if k.endswith("/loss")]
    others = [k for k in keys if k not in losses]
    fig = figure(11 if others else 6, 4)
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)
    for ax, group, label in zip(axes[0], (losses, others), ("loss", "metric")):
        for key in group:
            ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8, loc="upper right")  # "best" placement costs more than the whole plot
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.22)
    fig.savefig(path, dpi=100)
    return path


def confusion_matrix(matrix: Any, classes: Sequence[str], path: Path, title: str = "confusion matrix") -> Path:
    """A labelled confusion matrix (rows: true class, columns: predicted class) with counts."""
    import numpy as np

    m = np.asarray(matrix)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig = figure(size, size)
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2 if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > threshold else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
