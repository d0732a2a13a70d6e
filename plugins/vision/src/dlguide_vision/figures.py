"""Pictures of a vision run that the core does not draw: the grid of misclassified test images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch


class Mistake(NamedTuple):
    """One misclassified image (``C x H x W``, uint8 or float in [0, 1]) with its labels."""

    image: torch.Tensor
    true: int
    predicted: int
    probability: float


def misclassified_grid(mistakes: Sequence[Mistake], classes: Sequence[str], path: Path) -> Path:
    """A square grid of misclassified images titled ``true -> predicted (probability)``."""
    from torchvision.transforms.v2 import functional as TF

    from dlguide.plots import figure

    cols = max(1, math.ceil(math.sqrt(len(mistakes))))
    rows = max(1, math.ceil(len(mistakes) / cols))
    fig = figure(1.6 * cols, 1.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes):
        image = TF.to_dtype(m.image, torch.float32, scale=True).clamp(0, 1)
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(f"{classes[m.true]} -> {classes[m.predicted]} ({m.probability:.2f})", fontsize=7)
    fig.suptitle("misclassified test images: true -> predicted (probability)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
