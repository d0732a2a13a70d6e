"""The configs of medical.segment and medical.classify, in a module that imports no torch or
MONAI: ``dlguide info`` reads them without loading the tasks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dlguide import SCHEDULERS, TrainConfig, UsageError, check_fractions, check_held_out, option


@dataclasses.dataclass
class SegmentationConfig(TrainConfig):
    # the defaults reach a test Dice of about 0.95 on the synthetic set in under a minute on two
    # idle CPU cores (benchmarks/medical.py)
    epochs: int = option(10, "number of passes over the training volumes")
    batch_size: int = option(2, "volumes per batch; each gives samples_per_volume training patches")
    lr: float = option(3e-3, "learning rate (the peak rate for onecycle)")
    scheduler: str = option("cosine", "learning-rate schedule, stepped per optimizer step (plateau: per epoch)",
                            choices=SCHEDULERS)
    monitor: str = option("val/dice", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("synthetic", "synthetic (spheres made by MONAI), mni-brain (the MNI152 template in "
                          "nilearn, grey/white matter), msd (a Decathlon folder in data_dir) or another registered "
                          "loader of an MSD folder", registry="dataset")
    synthetic_cases: int = option(24, "volumes of the synthetic set")
    synthetic_size: int = option(64, "voxels along each side of a synthetic volume")
    synthetic_classes: int = option(1, "foreground labels of the synthetic set (spheres banded by brightness)")
    synthetic_noise: float = option(0.5, "uniform noise of the synthetic set, relative to the spheres' brightness")
    mni_slabs: int = option(8, "front-to-back slabs the MNI152 volume is cut into; whole slabs are held out")
    val_fraction: float = option(0.15, "share of the cases held out for validation (unless dataset.json has a "
                                 "'validation' list)")
    test_fraction: float = option(0.15, "share of the cases held out for testing")
    spacing: list[float] = option([1.0, 1.0, 1.0], "voxel size in mm (x, y, z) every volume is resampled to")
    intensity: str = option("normalize", "normalize (per volume mean 0, std 1; MR) or range (intensity_range "
                            "clipped to [0, 1]; CT)", choices=("normalize", "range"))
    intensity_range: list[float] = option([-175.0, 250.0], "the window mapped to [0, 1] by intensity=range")
    patch_size: list[int] = option([32, 32, 32], "voxels of a training patch and of a sliding window")
    samples_per_volume: int = option(4, "random patches per training volume and epoch, half around foreground")
    flip_prob: float = option(0.5, "probability of flipping a patch along each axis")
    model: str = option("unet", "unet (MONAI's residual U-Net), segresnet or another registered builder",
                        registry="model")
    channels: list[int] = option([16, 32, 64, 128], "filters per resolution level (its length is the depth)")
    res_units: int = option(1, "residual units per U-Net level")
    dropout: float = option(0.0, "dropout inside the network")
    sw_batch_size: int = option(4, "windows per forward pass of sliding-window inference")
    sw_overlap: float = option(0.25, "overlap of neighbouring sliding windows")

    def validate(self) -> None:
        super().validate()
        if self.dataset == "msd" and self.data_dir is None:
            raise UsageError("dataset 'msd' reads a Decathlon folder: add --set data_dir=PATH")
        if self.data_dir is not None and self.dataset in ("synthetic", "mni-brain"):  # made here, not read
            raise UsageError(f"data_dir is not read by dataset {self.dataset!r}: add --set dataset=msd")
        for key, size in (("spacing", 3), ("patch_size", 3), ("intensity_range", 2)):
            if len(getattr(self, key)) != size:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected {size} numbers")
        if min(self.spacing) <= 0 or min(self.patch_size) < 8:
            raise UsageError(f"spacing {self.spacing} must be > 0 and patch_size {self.patch_size} at least 8 voxels")
        levels = 2 ** (len(self.channels) - 1)
        if any(p % levels for p in self.patch_size):
            raise UsageError(f"patch_size {self.patch_size} must be divisible by {levels} for {len(self.channels)} "
                             "levels of channels")
        check_fractions(self, "val_fraction", "test_fraction", "flip_prob", "dropout", "sw_overlap")
        counts = {"synthetic_cases": (self.synthetic_cases, 3), "synthetic_classes": (self.synthetic_classes, 1),
                  "mni_slabs": (self.mni_slabs, 3), "samples_per_volume": (self.samples_per_volume, 1),
                  "sw_batch_size": (self.sw_batch_size, 1), "res_units": (self.res_units, 0)}
        for key, (value, low) in counts.items():
            if value < low:
                raise UsageError(f"invalid value for {key!r}: {value}; expected an integer >= {low}")

    def synthetic_data(self) -> Path:
        """The synthetic spheres as an MSD folder (``dataset=synthetic``), written once into the cache."""
        from dlguide_medical.sources import synthetic_msd

        return synthetic_msd(self.synthetic_cases, self.synthetic_size, self.synthetic_classes, self.synthetic_noise)


@dataclasses.dataclass
class MedicalClassificationConfig(TrainConfig):
    epochs: int = option(8, "number of passes over the training images")
    batch_size: int = option(32, "images per batch")
    lr: float = option(1e-3, "learning rate (the peak rate for onecycle)")
    # a decaying rate settles the batch-norm statistics that make a small set's validation jumpy
    scheduler: str = option("cosine", "learning-rate schedule, stepped per optimizer step (plateau: per epoch)",
                            choices=SCHEDULERS)
    monitor: str = option("val/accuracy", "metric that picks the best checkpoint and drives early stopping")
    dataset: str = option("synthetic", "synthetic (discs by MONAI's create_test_image_2d in three size classes), "
                          "folder (data_dir/<class>/<image>, the MedNIST layout) or another registered loader of "
                          "such a folder", registry="dataset")
    model: str = option("densenet121", "densenet121 (MONAI's 2D DenseNet-121) or another registered builder",
                        registry="model")
    synthetic_per_class: int = option(100, "images per class of the synthetic set")
    image_size: int = option(64, "pixels along each side every image is resized to")
    val_fraction: float = option(0.15, "share of each class held out for validation")
    test_fraction: float = option(0.2, "share of each class held out for testing")
    augment: bool = option(False, "flip and rotate training images at random")

    def validate(self) -> None:
        super().validate()
        if self.dataset == "folder" and self.data_dir is None:
            raise UsageError("dataset 'folder' reads one subfolder per class: add --set data_dir=PATH")
        if self.data_dir is not None and self.dataset == "synthetic":  # made here, not read
            raise UsageError(f"data_dir is not read by dataset {self.dataset!r}: add --set dataset=folder")
        check_held_out(self, "training images")
        for key, low in (("image_size", 16), ("synthetic_per_class", 5)):
            if getattr(self, key) < low:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected an integer >= {low}")

    def synthetic_data(self) -> Path:
        """The synthetic discs as a class folder (``dataset=synthetic``), written once into the cache."""
        from dlguide_medical.class_data import synthetic_folder

        return synthetic_folder(self.synthetic_per_class, self.image_size)
