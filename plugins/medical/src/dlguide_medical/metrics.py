"""MONAI's cumulative metrics behind the small interface the Trainer asks of a metric.

The Trainer moves each metric with ``to(device)``, empties it with ``reset()`` before each pass
and reads it with ``compute()``; it flattens a scalar under ``<stage>/<key>``. One MONAI
metric yields a value per class, so a ``MetricView`` per key (``dice``, ``dice/<class>``)
reads from one shared ``SegmentationScores``, and the expensive Hausdorff distances are
computed once per case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, ROCAUCMetric


class SegmentationScores:
    """Per-class Dice and 95th-percentile Hausdorff distance (mm) over every case seen, foreground only."""

    def __init__(self, classes: Sequence[str], spacing: Sequence[float]) -> None:
        self.classes = list(classes)
        self.spacing = [float(s) for s in spacing]
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean_batch")
        self._result: dict[str, torch.Tensor] | None = None

    def reset(self) -> None:
        self.dice.reset()
        self.hd95.reset()
        self._result = None

    def update(self, pred_onehot: torch.Tensor, label_onehot: torch.Tensor) -> None:
        """Add a batch of one-hot predictions and labels, ``[B, classes + 1, *spatial]``."""
        self.dice(y_pred=pred_onehot, y=label_onehot)
        self.hd95(y_pred=pred_onehot, y=label_onehot, spacing=self.spacing)
        self._result = None

    def result(self) -> dict[str, torch.Tensor]:
        """``{"dice": [classes], "hd95": [classes]}``; NaN for a class absent from every case."""
        if self._result is None:
            self._result = {}
            for name, metric in (("dice", self.dice), ("hd95", self.hd95)):
                buffer = metric.get_buffer()
                self._result[name] = (metric.aggregate().float().cpu() if buffer is not None and len(buffer)
                                      else torch.full((len(self.classes),), float("nan")))
        return self._result

    def views(self) -> dict[str, MetricView]:
        """The keys a run reports: ``dice`` and ``hd95`` (mean over classes) and one per class."""
        out: dict[str, MetricView] = {}
        for name in ("dice", "hd95"):
            out[name] = MetricView(self, name)
            for i, cls in enumerate(self.classes):
                out[f"{name}/{cls}"] = MetricView(self, name, i)
        return out


class MetricView:
    """One scalar of a ``SegmentationScores``: the mean over classes, or one class."""

    def __init__(self, scores: SegmentationScores, name: str, index: int | None = None) -> None:
        self.scores = scores
        self.name = name
        self.index = index

    def to(self, device: Any) -> MetricView:
        return self  # MONAI keeps its buffers on the device of the tensors it is given

    def reset(self) -> None:
        self.scores.reset()  # once per view: the shared scores are emptied, which is idempotent

    def compute(self) -> torch.Tensor:
        values = self.scores.result()[self.name]
        if self.index is not None:
            return values[self.index]
        return values.nanmean() if not values.isnan().all() else torch.tensor(float("nan"))


class RocAuc:
    """MONAI's macro-averaged one-vs-rest ROC AUC over every sample seen."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.metric = ROCAUCMetric(average="macro")

    def to(self, device: Any) -> RocAuc:
        return self

    def reset(self) -> None:
        self.metric.reset()

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        onehot = torch.nn.functional.one_hot(labels.long(), self.num_classes)
        self.metric(y_pred=probs.float(), y=onehot)

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(self.metric.aggregate()))
