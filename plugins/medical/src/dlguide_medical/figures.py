"""Pictures of the medical tasks: a test case's middle slice with its true and predicted labels."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dlguide import figure

LABEL_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf")


@dataclasses.dataclass
class Overlay:
    """One axial slice of a test case: intensities and both label maps, as numpy arrays."""

    case: str
    image: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray

    @classmethod
    def middle_slice(cls, case: str, image: torch.Tensor, truth: torch.Tensor, predicted: torch.Tensor) -> Overlay:
        """The middle slice along the last (inferior-superior, after RAS) axis of ``[X, Y, Z]`` volumes."""
        z = image.shape[-1] // 2
        return cls(case, *(t[..., z].detach().float().cpu().numpy() for t in (image, truth, predicted)))


def overlay_png(overlay: Overlay, classes: Sequence[str], path: Path) -> Path:
    """Two panels, true and predicted labels filled over the grey image, with a legend of classes."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ListedColormap(LABEL_COLOURS[: max(1, len(classes))])
    fig = figure(9, 4.8)
    axes = fig.subplots(1, 2)
    for ax, labels, title in zip(axes, (overlay.truth, overlay.predicted), ("true labels", "predicted labels")):
        ax.imshow(overlay.image.T, cmap="gray", origin="lower")  # x to the right, y (posterior-anterior) up
        masked = np.ma.masked_where(labels.T == 0, labels.T - 1)
        ax.imshow(masked, cmap=colours, vmin=0, vmax=max(1, len(classes)) - 1, alpha=0.45, origin="lower",
                  interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=LABEL_COLOURS[i % len(LABEL_COLOURS)], label=c) for i, c in enumerate(classes)],
               loc="lower center", ncol=min(4, len(classes)), fontsize=9)
    fig.suptitle(f"{overlay.case}: middle axial slice")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.1, wspace=0.05)
    fig.savefig(path, dpi=90)
    return path
