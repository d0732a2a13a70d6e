"""The data keys every vision task shares: which images, how they are split and converted."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dlguide import TrainConfig, UsageError, check_held_out, option

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
