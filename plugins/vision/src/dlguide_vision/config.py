"""The data keys every vision task shares: which images, how they are split and converted."""

from __future__ import annotations

import dataclasses

from dlguide._config import check_held_out, option
from dlguide._errors import UsageError
from dlguide._task import TrainConfig
from dlguide_vision.datasets import LOADERS


@dataclasses.dataclass
class ImageDataConfig(TrainConfig):
    dataset: str = option("digits", "data set: digits (sklearn's 8x8, offline), mnist, fashion-mnist, kmnist, "
                          "cifar10 or imagefolder (data_dir/<class>/<image>)", choices=tuple(LOADERS))
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
