"""MONAI's cumulative metrics behind the small interface the Trainer asks of a metric.

The Trainer moves each metric with ``to(device)``, empties it with ``reset()`` before each pass
and reads it with ``compute()``; it flattens a scalar under ``<stage>/<key>``. One MONAI
metric yields a value per class, so a ``MetricView`` per key (``dice``, ``dice/<class>``)
reads from one shared ``SegmentationScores``, and the expensive Hausdorff distances are
computed once per case.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from dlguide import gather_rows
from monai.metrics import DiceMetric, HausdorffDistanceMetric, compute_roc_auc
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction


class SegmentationScores:
    """Per-class Dice and 95th-percentile Hausdorff distance (mm) over every case seen, foreground only.

    Each case's values are kept and, when several processes evaluate (each its share of the
    cases, possibly none), gathered from all of them before MONAI's reduction, so the figures
    equal one process's.
    """

    def __init__(self, classes: Sequence[str], spacing: Sequence[float]) -> None:
        self.classes = list(classes)
        self.spacing = [float(s) for s in spacing]
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean_batch")
        self._cases: dict[str, list[torch.Tensor]] = {"dice": [], "hd95": []}
        self._result: dict[str, torch.Tensor] | None = None

    def reset(self) -> None:
        self._cases = {"dice": [], "hd95": []}
        self._result = None

    def update(self, pred_onehot: torch.Tensor, label_onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add a batch of one-hot predictions and labels, ``[B, classes + 1, *spatial]``; returns
        the batch's per-case values (``{"dice": [B, classes], "hd95": [B, classes]}``)."""
        # MONAI's metrics compute each case's values; their own buffers (which synchronise only
        # in processes that saw a case) are emptied, the values kept here
        for name, metric, kwargs in (("dice", self.dice, {}), ("hd95", self.hd95, {"spacing": self.spacing})):
            with warnings.catch_warnings():  # MONAI 1.5's own Hausdorff metric passes an argument it deprecated
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
                values = metric(y_pred=pred_onehot, y=label_onehot, **kwargs)
            metric.reset()
            self._cases[name].append(values.detach().float().cpu())
        self._result = None
        return {name: cases[-1] for name, cases in self._cases.items()}

    def result(self) -> dict[str, torch.Tensor]:
        """``{"dice": [classes], "hd95": [classes]}``; NaN for a class absent from every case."""
        if self._result is None:
            self._result = {}
            for name, cases in self._cases.items():
                local = torch.cat(cases) if cases else torch.zeros((0, len(self.classes)))
                every = gather_rows(local)  # every process's cases: a collective, called by each
                if len(every):
                    reduced, _ = do_metric_reduction(every, MetricReduction.MEAN_BATCH)
                    self._result[name] = reduced.float()
                else:
                    self._result[name] = torch.full((len(self.classes),), float("nan"))
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
    """MONAI's macro-averaged one-vs-rest ROC AUC over every sample seen (in every process)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def to(self, device: Any) -> RocAuc:
        return self

    def reset(self) -> None:
        self._probs, self._labels = [], []

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self._probs.append(probs.detach().float().cpu())
        self._labels.append(labels.detach().long().cpu())

    def compute(self) -> torch.Tensor:
        probs = gather_rows(torch.cat(self._probs) if self._probs else torch.zeros((0, self.num_classes)))
        labels = gather_rows(torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long))
        if not len(labels):
            return torch.tensor(float("nan"))
        onehot = torch.nn.functional.one_hot(labels, self.num_classes)
        return torch.tensor(float(compute_roc_auc(probs, onehot, average="macro")))
