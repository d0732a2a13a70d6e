"""Pictures of a vision run that the core does not draw: misclassified images, sample grids, class shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from dlguide import figure


class Mistake(NamedTuple):
    """One misclassified image (``C x H x W``, uint8 or float in [0, 1]) with its labels."""

    image: torch.Tensor
    true: int
    predicted: int
    probability: float


def misclassified_grid(mistakes: Sequence[Mistake], classes: Sequence[str], path: Path) -> Path:
    """A square grid of misclassified images, each titled ``true -> predicted (probability)``.

    The images are tiled into one picture on one axes: a subplot per image (36 of them, each
    laid out and drawn on its own) took most of a short run's time."""
    from torchvision.transforms.v2 import functional as TF

    cols = max(1, math.ceil(math.sqrt(len(mistakes))))
    rows = max(1, math.ceil(len(mistakes) / cols))
    images = [TF.to_dtype(m.image, torch.float32, scale=True).clamp(0, 1) for m in mistakes]
    channels = 3 if any(image.shape[0] == 3 for image in images) else 1
    height, width = (max(image.shape[i] for image in images) if images else 8 for i in (1, 2))
    gap_x, gap_y = max(1, width // 8), max(1, height // 2)  # room for each title above its image
    canvas = torch.ones(channels, rows * (height + gap_y), cols * (width + gap_x))
    fig = figure(1.6 * cols, 1.8 * rows)
    ax = fig.subplots()
    for i, (image, m) in enumerate(zip(images, mistakes)):
        top, left = (i // cols) * (height + gap_y) + gap_y, (i % cols) * (width + gap_x)
        canvas[:, top:top + image.shape[1], left:left + image.shape[2]] = image.expand(channels, -1, -1)
        ax.text(left + image.shape[2] / 2, top - 0.5, f"{classes[m.true]} -> {classes[m.predicted]} "
                f"({m.probability:.2f})", fontsize=7, ha="center", va="bottom")
    ax.imshow(canvas[0].numpy() if channels == 1 else canvas.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    fig.suptitle("misclassified test images: true -> predicted (probability)", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.4 / (1.8 * rows))
    fig.savefig(path, dpi=100)
    return path


def _enlarged(images: torch.Tensor, side: int = 64) -> torch.Tensor:
    """Images scaled up by a whole factor (nearest neighbour) so small ones stay crisp and visible."""
    factor = max(1, side // images.shape[-1])
    return images.repeat_interleave(factor, -1).repeat_interleave(factor, -2) if factor > 1 else images


def save_grid(images: torch.Tensor, path: Path, per_row: int = 8) -> Path:
    """Images ``N x C x H x W`` in [0, 1] as one PNG grid, ``per_row`` to a row."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(_enlarged(images), path, nrow=per_row, padding=2, pad_value=1.0)
    return path


def class_histogram(shares: Sequence[float], classes: Sequence[str], path: Path, title: str) -> Path:
    """Bars of the share of generated images per class, with the uniform share marked."""
    fig = figure(max(5.0, 0.5 * len(classes) + 2), 3.5)
    ax = fig.subplots()
    ax.bar(range(len(classes)), shares, color="tab:blue")
    ax.axhline(1 / len(classes), color="tab:red", linestyle="--", label="uniform")
    ax.set_xticks(range(len(classes)), labels=list(classes))
    ax.set_ylabel("share of samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
