"""The data keys every vision task shares: which images, how they are split and converted."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dlguide import SCHEDULERS, TrainConfig, UsageError, check_fractions, check_held_out, option

#: activations of the cnn and lenet5 (dlguide_vision.models.ACTIVATIONS builds them)
ACTIVATION_NAMES = ("relu", "sigmoid", "tanh")

if TYPE_CHECKING:
    from dlguide import Task
    from dlguide_vision.datasets import Images


@dataclasses.dataclass
class ImageDataConfig(TrainConfig):
    dataset: str = option("digits", "data set: digits (sklearn's 8x8, offline), mnist, fashion-mnist, kmnist, "
                          "cifar10, imagefolder (data_dir/<class>/<image>) or one another package registers",
                          registry="dataset")
    download: bool = option(False, "fetch mnist, fashion-mnist, kmnist or cifar10 into data_dir (or the cache) "
                            "when its files are missing")
    val_fraction: float = option(0.1, "share of the training data held out for validation when the data set has "
                                 "no validation split")
    test_fraction: float = option(0.2, "share of the data held out for testing when the data set has no test split")
    image_size: int = option(0, "resize images to this many pixels square (0: the data set's own; 32 for "
                             "imagefolder)")
    image_channels: int = option(0, "convert images to 1 (grayscale) or 3 (RGB) channels (0: the data set's own)",
                                 choices=(0, 1, 3))

    def validate(self) -> None:
        super().validate()
        check_held_out(self)
        if self.image_size < 0:
            raise UsageError(f"invalid value for 'image_size': {self.image_size}; expected a value >= 0")


def load_task_images(task: Task) -> Images:
    """The images of ``task``'s config, read by the loader registered as its ``dataset`` (so a data
    set another package registers for the task loads like the built-in ones), with all three splits."""
    from dlguide_vision.datasets import load_images

    cfg = task.config
    assert isinstance(cfg, ImageDataConfig)
    return load_images(task.registered("dataset", cfg.dataset), data_dir=cfg.data_dir, download=cfg.download,
                       channels=cfg.image_channels, image_size=cfg.image_size, val_fraction=cfg.val_fraction,
                       test_fraction=cfg.test_fraction, seed=cfg.seed,
                       name=cfg.dataset)


@dataclasses.dataclass
class ImageClassificationConfig(ImageDataConfig):
    # the defaults reach >= 0.98 test accuracy on digits in a few seconds on two CPU cores
    # (benchmarks/vision.py) and >= 0.99 on MNIST in 3 epochs
    epochs: int = option(20, "number of passes over the training data")
    batch_size: int = option(32, "samples per batch")
    lr: float = option(3e-3, "learning rate (the peak rate for onecycle)")
    scheduler: str = option("onecycle", "learning-rate schedule, stepped per optimizer step (plateau: per epoch)",
                            choices=SCHEDULERS)
    monitor: str = option("val/accuracy", "metric that picks the best checkpoint and drives early stopping")
    model: str = option("cnn", "cnn (the chapter's), lenet5, resnet18 (small-input stem) or one another "
                        "package registers for vision.classify", registry="model")
    channels: list[int] = option([32, 64], "filters of each conv/activation/pool block of the cnn; "
                                 "the number of entries is its depth")
    activation: str = option("relu", "activation of the cnn and lenet5: relu, sigmoid or tanh",
                             choices=ACTIVATION_NAMES)
    hidden: int = option(128, "units of the cnn's fully connected hidden layer")
    dropout: float = option(0.25, "dropout before and after the cnn's hidden layer")
    weights: Optional[Path] = option(None, "start from matching tensors of this local weights file "
                                     "(.safetensors or a torch state dict)")
    label_smoothing: float = option(0.0, "label smoothing of the training cross-entropy")
    augment: bool = option(False, "augment training images (rotation, translation, optional flips)")
    rotation: float = option(10.0, "largest random rotation in degrees when augmenting")
    translate: float = option(0.1, "largest random shift as a fraction of the image side when augmenting")
    hflip: bool = option(False, "also flip training images left-right at random when augmenting "
                         "(not for digits or letters)")

    def validate(self) -> None:
        super().validate()
        check_fractions(self, "dropout", "label_smoothing")
        if not 0 <= self.translate <= 1:
            raise UsageError(f"invalid value for 'translate': {self.translate}; expected a fraction in [0, 1]")
        if self.rotation < 0:
            raise UsageError(f"invalid value for 'rotation': {self.rotation}; expected a value >= 0")
        if self.hidden < 1 or any(c < 1 for c in self.channels):
            raise UsageError(f"hidden ({self.hidden}) and every entry of channels ({self.channels}) must be >= 1")
        if self.weights is not None and not self.weights.is_file():
            raise UsageError(f"weights file not found: {self.weights}")


@dataclasses.dataclass
class ImageGenerationConfig(ImageDataConfig):
    # DCGAN's settings: Adam at 2e-4 with beta1 0.5, batches of 64
    epochs: int = option(30, "number of passes over the training data")
    batch_size: int = option(64, "samples per batch")
    lr: float = option(2e-4, "learning rate of both players")
    beta1: float = option(0.5, "Adam's first-moment decay for both players (DCGAN: 0.5)")
    monitor: str = option("val/frechet_distance", "metric that picks the best checkpoint")
    model: str = option("dcgan", "dcgan, or a GAN another package registers for vision.gan", registry="model")
    latent_dim: int = option(64, "length of the generator's input noise vector")
    g_features: int = option(32, "feature maps of the generator's last hidden layer (doubling towards the input)")
    d_features: int = option(32, "feature maps of the discriminator's first layer (doubling towards the output)")
    extra_layers: int = option(0, "3x3 convolution layers added at the generator's last and the discriminator's "
                               "first hidden resolution (n_extra_layers of DCGAN's reference code)")
    ema_decay: float = option(0.999, "decay of the moving average of the generator's weights that makes the "
                              "samples (0: sample from the training generator); short runs warm it up")
    label_smoothing: float = option(0.0, "one-sided label smoothing: the discriminator's target for real images "
                                    "is 1 - this value (0.1 is common)")
    classifier: Optional[Path] = option(None, "a finished vision.classify run on the same data that scores the "
                                        "samples (default: train one into <run>/classifier)")
    classifier_epochs: int = option(0, "epochs of the classifier trained on the fly (0: 20 for digits, 3 for "
                                    "larger data sets)")
    quality_samples: int = option(1000, "generated images scored at the end of the run (gan/... metrics)")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.label_smoothing < 0.5:
            raise UsageError(f"invalid value for 'label_smoothing': {self.label_smoothing}; expected a number in "
                             "[0, 0.5)")
        check_fractions(self, "ema_decay", "beta1")
        for key in ("latent_dim", "g_features", "d_features", "quality_samples"):
            if getattr(self, key) < (2 if key == "quality_samples" else 1):
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected a positive integer"
                                 + (" >= 2" if key == "quality_samples" else ""))
        if self.extra_layers < 0:
            raise UsageError(f"invalid value for 'extra_layers': {self.extra_layers}; expected an integer >= 0")
        if self.classifier_epochs < 0:
            raise UsageError(f"invalid value for 'classifier_epochs': {self.classifier_epochs}; expected >= 0")
        if self.classifier is not None and not (self.classifier / "config.yaml").is_file():
            raise UsageError(f"classifier {self.classifier} is not a dlguide run directory (no config.yaml)")
