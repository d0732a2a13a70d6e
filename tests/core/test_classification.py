"""The classification metrics and confusion-matrix picture every classification task shares."""

from __future__ import annotations

import torch

from dlguide._classification import classification_metrics, write_confusion_matrix
from dlguide._trainer import flatten_metrics


def test_metrics_per_stage_and_their_values():
    assert set(classification_metrics(3, "val")) == {"accuracy", "f1_macro", "precision", "recall"}
    assert set(classification_metrics(3, "val", per_class=False)) == {"accuracy", "f1_macro"}
    metrics = classification_metrics(3, "test", extra_metric=classification_metrics(3, "val")["accuracy"])
    assert set(metrics) == {"accuracy", "f1_macro", "precision", "recall", "extra_metric", "confusion_matrix"}
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    labels = torch.tensor([0, 1, 2, 2])
    for metric in metrics.values():
        metric.update(logits, labels)
    flat = flatten_metrics("test", {k: m.compute() for k, m in metrics.items() if k != "confusion_matrix"},
                           ["a", "b", "c"])
    assert flat["test/accuracy"] == 0.75
    assert flat["test/precision/b"] == 0.5 and flat["test/recall/c"] == 0.5 and flat["test/recall/a"] == 1.0
    assert metrics["confusion_matrix"].compute().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_confusion_matrix_png_only_after_a_test_pass(tmp_path):
    assert write_confusion_matrix(classification_metrics(2, "val"), ["x", "y"], tmp_path, "t") == []
    metrics = classification_metrics(2, "test")
    metrics["confusion_matrix"].update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    [path] = write_confusion_matrix(metrics, ["x", "y"], tmp_path, "t")
    assert path == tmp_path / "confusion_matrix.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
