"""What every classification task measures and draws, whatever its inputs.

Tasks import this module (it imports torchmetrics); ``import dlguide`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchmetrics.classification as tmc


#: the direction of every metric ``classification_metrics`` makes, for a task's ``metric_modes``
CLASSIFICATION_METRIC_MODES = {"accuracy": "max", "f1_macro": "max", "precision": "max", "recall": "max"}


def classification_metrics(classes: int, stage: str, *, per_class: bool = True, **extra: Any) -> dict[str, Any]:
    """Accuracy and macro F1; per-class precision and recall (``per_class``); ``extra`` metrics
    by name; and, on the test pass, a confusion matrix (drawn by :func:`write_confusion_matrix`).

    Each metric is updated with ``(logits or probabilities, labels)``.
    """
    metrics: dict[str, Any] = {"accuracy": tmc.MulticlassAccuracy(classes, average="micro"),
                               "f1_macro": tmc.MulticlassF1Score(classes, average="macro")}
    if per_class:
        metrics["precision"] = tmc.MulticlassPrecision(classes, average=None)
        metrics["recall"] = tmc.MulticlassRecall(classes, average=None)
    metrics.update(extra)
    if stage == "test":
        metrics["confusion_matrix"] = tmc.MulticlassConfusionMatrix(classes)
    return metrics


def record_classification(run: Any, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Record a test batch's per-sample outcomes for ``dlguide compare``: whether each sample's
    top class is its label (McNemar's test) and its cross-entropy (the Wilcoxon test)."""
    if run is None:
        return
    import torch.nn.functional as F

    logits = logits.detach().float()
    run.record(correct=logits.argmax(1) == labels, loss=F.cross_entropy(logits, labels, reduction="none"))


def write_confusion_matrix(metrics: Mapping[str, Any], classes: Sequence[str], run_dir: Path,
                           title: str) -> list[Path]:
    """``run_dir/confusion_matrix.png`` from a test pass's metrics (none without a confusion matrix)."""
    from dlguide._plots import confusion_matrix

    if "confusion_matrix" not in metrics:
        return []
    matrix = metrics["confusion_matrix"].compute().cpu().numpy()
    return [confusion_matrix(matrix, list(classes), run_dir / "confusion_matrix.png", title)]
