"""What every classification task measures and draws, whatever its inputs.

Tasks import this module (it imports torchmetrics); ``import dlguide`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchmetrics.classification as tmc

if TYPE_CHECKING:
    from dlguide._inference import RawInput


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


def encode_classes(probabilities: torch.Tensor | Sequence[float], classes: Sequence[Any],
                   raw: RawInput | None = None, *, top: int | None = 3) -> dict[str, Any]:
    """One classifier prediction in the shape every classification task shares:
    ``{"input", "label", "probability", "top": [{"label", "probability"}, ...]}``, the ``top``
    classes most likely first (``None``: every class), probabilities rounded to 4 places.

    ``"input"`` is ``raw.echo`` when ``raw`` is given; without it the row has none, and the core
    puts one first (a task that names its inputs otherwise, such as a text's echo, adds its own).
    ``Task.format_prediction`` prints such a row as ``a fine film  ->  fresh 0.55  (rotten 0.45)``.
    """
    scores = torch.as_tensor(probabilities).detach().float().cpu().flatten()
    if len(scores) != len(classes):
        raise ValueError(f"{len(scores)} probabilities for {len(classes)} classes")
    count = len(classes) if top is None else max(1, min(top, len(classes)))
    values, order = scores.sort(descending=True, stable=True)  # ties: the first class, as argmax
    ranked = [{"label": str(classes[i]), "probability": round(p, 4)}
              for p, i in zip(values[:count].tolist(), order[:count].tolist())]
    row: dict[str, Any] = {} if raw is None else {"input": raw.echo}
    row.update(label=ranked[0]["label"], probability=ranked[0]["probability"], top=ranked)
    return row

