"""medical.classify: 2D medical image classification with MONAI's DenseNet-121.

    dlguide run medical.classify --out runs/shapes                          # synthetic small/medium/large discs
    dlguide run medical.classify --set dataset=folder data_dir=MedNIST epochs=3 --out runs/mednist
    dlguide predict runs/mednist hand.jpeg slice.dcm brain.nii.gz

Images of any supported format and size are read by MONAI, made single-channel, scaled to
[0, 1] and resized to ``image_size``; the test reports accuracy, MONAI's ROC AUC and a
confusion matrix, and ``predict`` prints every class's probability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose
from torch import nn

from dlguide._classification import classification_metrics, write_confusion_matrix
from dlguide._config import check_held_out, option
from dlguide._errors import UsageError
from dlguide._task import SCHEDULERS, DataSplits, Task, TrainConfig
from dlguide_medical.caching import SeededCache, cached
from dlguide_medical.class_data import read_class_folder, stratified_split, synthetic_folder, transforms
from dlguide_medical.files import check_input, usage_errors_unwrapped
from dlguide_medical.metrics import RocAuc
from dlguide_medical.models import densenet121


@dataclasses.dataclass
class MedicalClassificationConfig(TrainConfig):
    epochs: int = option(8, "number of passes over the training images")
    batch_size: int = option(32, "images per batch")
    lr: float = option(1e-3, "learning rate (the peak rate for onecycle)")
    # a decaying rate settles the batch-norm statistics that make a small set's validation jumpy
    scheduler: str = option("cosine", "learning-rate schedule, stepped per optimizer step (plateau: per epoch)",
                            choices=SCHEDULERS)
    monitor: str = option("val/accuracy", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("synthetic", "synthetic (discs by MONAI's create_test_image_2d in three size classes) "
                          "or folder (data_dir/<class>/<image>, the MedNIST layout)", choices=("synthetic", "folder"))
    synthetic_per_class: int = option(100, "images per class of the synthetic set")
    image_size: int = option(64, "pixels along each side every image is resized to")
    val_fraction: float = option(0.15, "share of each class held out for validation")
    test_fraction: float = option(0.2, "share of each class held out for testing")
    augment: bool = option(False, "flip and rotate training images at random")

    def validate(self) -> None:
        super().validate()
        if self.dataset == "folder" and self.data_dir is None:
            raise UsageError("dataset 'folder' reads one subfolder per class: add --set data_dir=PATH")
        if self.data_dir is not None and self.dataset != "folder":
            raise UsageError(f"data_dir is read by dataset=folder only, not {self.dataset!r}: add --set dataset=folder")
        check_held_out(self, "training images")
        for key, low in (("image_size", 16), ("synthetic_per_class", 5)):
            if getattr(self, key) < low:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected an integer >= {low}")


class MedicalClassificationTask(Task):
    """Classify 2D medical images; test with accuracy, ROC AUC and a confusion matrix."""

    Config = MedicalClassificationConfig
    config: MedicalClassificationConfig

    def build_data(self) -> DataSplits:
        cfg = self.config
        folder = cfg.data_dir if cfg.dataset == "folder" else synthetic_folder(cfg.synthetic_per_class, cfg.image_size)
        assert folder is not None
        classes, items = read_class_folder(folder)
        splits = stratified_split(items, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        self.meta = {"dataset": cfg.dataset, "classes": classes, "image_size": cfg.image_size,
                     "sizes": {name: len(split) for name, split in splits.items()}}
        if not splits["train"]:
            raise UsageError(f"{folder}: no training images are left after holding out val and test")
        evaluation = transforms(cfg.image_size, augment=False)
        return DataSplits(
            train=SeededCache(splits["train"], transforms(cfg.image_size, cfg.augment)),
            val=cached(splits["val"], evaluation) if splits["val"] else None,
            test=cached(splits["test"], evaluation) if splits["test"] else None,
        )

    def build_model(self) -> nn.Module:
        return densenet121(1, len(self.meta["classes"]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(batch["image"]), batch["label"])

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        n = len(self.meta["classes"])
        return classification_metrics(n, stage, per_class=False, auc=RocAuc(n))

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        logits = self.model(batch["image"])
        labels = batch["label"]
        for metric in metrics.values():
            metric.update(logits.float().softmax(1), labels)
        return nn.functional.cross_entropy(logits, labels)

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        return write_confusion_matrix(metrics, self.meta["classes"], run_dir,
                                      f"{self.name} on {self.meta['dataset']}: test confusion matrix")

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """Every class's probability for each image file, most likely first."""
        paths = [Path(p) for p in inputs]
        for path in paths:  # one bad name is reported before any work
            check_input(path)
        load: Compose = transforms(int(self.meta["image_size"]), augment=False)
        device = next(self.model.parameters()).device
        classes = list(self.meta["classes"])
        rows = []
        for path in paths:
            with usage_errors_unwrapped():
                image = load({"image": str(path)})["image"]
            probs = self.model(image[None].to(device)).float().softmax(1)[0].tolist()
            ranked = sorted(zip(classes, probs), key=lambda cp: -cp[1])
            rows.append({"path": str(path), "probabilities": [(c, round(p, 4)) for c, p in ranked]})
        return rows

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        return f"{row['path']}: " + ", ".join(f"{c} {p:.3f}" for c, p in row["probabilities"])
