"""medical.classify: 2D medical image classification with MONAI's DenseNet-121.

    dlguide run medical.classify --out runs/shapes                          # synthetic small/medium/large discs
    dlguide run medical.classify --set dataset=folder data_dir=MedNIST epochs=3 --out runs/mednist
    dlguide predict runs/mednist hand.jpeg slice.dcm brain.nii.gz

Images of any supported format and size are read by MONAI, made single-channel, scaled to
[0, 1] and resized to ``image_size``; the test reports accuracy, MONAI's ROC AUC and a
confusion matrix, and ``predict`` prints every class's probability.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose
from torch import nn

from dlguide import (CLASSIFICATION_METRIC_MODES, DataSplits, RawInput, Task, UsageError, classification_metrics,
                     cv_fold, encode_classes, record_classification, stratified_split, write_confusion_matrix)
from dlguide_medical.caching import SeededCache, cached
from dlguide_medical.class_data import read_class_folder, transforms
from dlguide_medical.config import MedicalClassificationConfig
from dlguide_medical.files import input_path, reference_files
from dlguide_medical.metrics import RocAuc




class MedicalClassificationTask(Task):
    """Classify 2D medical images; test with accuracy, ROC AUC and a confusion matrix.

    ``meta`` holds ``classes``, ``channels`` (1: images are read as grey), ``image_size`` and the
    size of each split: all that predict needs to read an image as training did.
    """

    Config = MedicalClassificationConfig
    config: MedicalClassificationConfig
    metric_modes = {**CLASSIFICATION_METRIC_MODES, "auc": "max"}
    input_kind = "file"  # PNG/JPEG, NIfTI or DICOM, a path or uploaded bytes with a file name
    supports_folds = True
    export_input_names = ("image",)
    export_output_names = ("logits",)
    test_files: Sequence[str] = ()

    def build_data(self) -> DataSplits:
        cfg = self.config
        folder = self.registered("dataset", cfg.dataset)(cfg)
        classes, items = read_class_folder(folder)
        train, val, test = ([items[i] for i in part] for part in
                            stratified_split([item["label"] for item in items],
                                             [cfg.val_fraction, cfg.test_fraction], cfg.seed))
        pooled = train + val
        folds = cv_fold(cfg, [item["label"] for item in pooled])
        if folds is not None:  # dlguide cv: one fold of train + val is the validation split
            train, val = ([pooled[i] for i in part] for part in folds)
        self.meta = {"dataset": cfg.dataset, "classes": classes, "channels": 1, "image_size": cfg.image_size,
                     "sizes": {"train": len(train), "val": len(val), "test": len(test)}}
        if not val and cfg.monitor.startswith("val/"):
            raise UsageError(f"{len(items)} images in {len(classes)} classes leave no validation image with "
                             f"val_fraction={cfg.val_fraction}; add images, raise val_fraction or set "
                             "monitor=train/loss")
        self.test_files = [item["image"] for item in test]
        evaluation = transforms(cfg.image_size, augment=False)
        return DataSplits(
            train=SeededCache(train, transforms(cfg.image_size, cfg.augment), cfg.seed),
            val=cached(val, evaluation) if val else None,
            test=cached(test, evaluation) if test else None,
        )

    def build_model(self) -> nn.Module:
        return self.build_registered_model(self.config.model)

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
        record_classification(self.run, logits, labels)  # in the test pass: per-image outcomes
        return nn.functional.cross_entropy(logits, labels)

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        return write_confusion_matrix(metrics, self.meta["classes"], run_dir,
                                      f"{self.name} on {self.meta['dataset']}: test confusion matrix")

    # -- inference: an image file in, every class's probability out -----------------------
    @functools.cached_property
    def _reader(self) -> Compose:
        return transforms(int(self.meta["image_size"]), augment=False)

    def decode(self, raw: RawInput) -> torch.Tensor:
        """The image read, made grey, scaled and resized as the evaluation images were: ``[1, size, size]``."""
        with input_path(raw) as path:
            return self._reader({"image": str(path)})["image"]

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """The test images' files as a client uploads them."""
        return reference_files(self.test_files, count)

    def predict_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, classes]``."""
        return self.model(batch).float().softmax(1)

    def encode(self, output: torch.Tensor, sample: torch.Tensor, raw: RawInput, *,
               out_dir: Path | None = None) -> dict[str, Any]:
        """Every class with its probability, most likely first, named by the input's path (an upload by its name)."""
        return encode_classes(output, self.meta["classes"], raw, top=None)
