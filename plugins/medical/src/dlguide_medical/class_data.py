"""The data of medical.classify: a folder with one subfolder of images per class (the MedNIST
layout), and the embedded synthetic set written in that same layout as PNG files.

Images are read by MONAI (PNG/JPEG, NIfTI, DICOM), made single-channel 2D, scaled to [0, 1]
and resized to one size, once, in a ``CacheDataset``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import PILWriter
from monai.data.synthetic import create_test_image_2d
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandRotate90d,
    Resized,
    ScaleIntensityd,
)

from dlguide import UsageError
from dlguide_medical.files import DICOM_SUFFIXES, NIFTI_SUFFIXES, PICTURE_SUFFIXES, LoadChecked
from dlguide_medical.msd import cache_root

IMAGE_SUFFIXES = NIFTI_SUFFIXES + PICTURE_SUFFIXES + DICOM_SUFFIXES
SYNTHETIC_SEED = 0
# radius ranges (as fractions of the image side) of the synthetic classes; the gaps between
# them keep the classes separable while objects of one class still vary in size and number
SYNTHETIC_CLASSES = {"small": (0.05, 0.10), "medium": (0.14, 0.20), "large": (0.24, 0.32)}


def synthetic_folder(per_class: int, size: int) -> Path:
    """``per_class`` noisy ``size``x``size`` PNG images of one to three discs per size class."""
    if size < 32:
        raise UsageError(f"invalid value for 'image_size': {size}; the synthetic set needs at least 32 pixels")
    folder = cache_root() / f"synthetic2d-n{per_class}-s{size}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        rs = np.random.RandomState(SYNTHETIC_SEED)
        writer = PILWriter(output_dtype=np.uint8, channel_dim=None)
        for name, (low, high) in SYNTHETIC_CLASSES.items():
            (tmp / name).mkdir()
            rad_min, rad_max = max(1, round(low * size)), round(high * size)
            for i in range(per_class):
                image, _ = create_test_image_2d(size, size, num_objs=int(rs.randint(1, 4)), rad_max=rad_max,
                                                rad_min=rad_min, noise_max=0.3, num_seg_classes=1, random_state=rs)
                writer.set_data_array(image, channel_dim=None)
                writer.write(str(tmp / name / f"{name}_{i:04d}.png"), verbose=False)
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote the same set first
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_class_folder(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Class names (sorted subfolder names) and ``{"image": path, "label": index}`` items."""
    if not folder.is_dir():
        raise UsageError(f"data_dir {folder} is not a folder; expected one subfolder of images per class")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UsageError(f"{folder} has {len(classes)} class subfolder(s); expected at least 2, each holding "
                         "PNG/JPEG/NIfTI/DICOM images")
    items = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir()
                       if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise UsageError(f"class folder {folder / name} holds no images; expected files ending in "
                             + ", ".join(IMAGE_SUFFIXES))
        items += [{"image": str(p), "label": index} for p in files]
    return classes, items


class AsGray2D(MapTransform):
    """One channel of two spatial axes: RGB(A) averaged, a trailing axis of size 1 (a single
    NIfTI or DICOM slice) dropped; a true 3D volume is a UsageError naming the file."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            while image.dim() > 3 and image.shape[-1] == 1:
                image = image[..., 0]
            if image.dim() != 3:
                name = getattr(image, "meta", {}).get("filename_or_obj", key)
                raise UsageError(f"{name}: image of shape {tuple(image.shape[1:])} is not 2D; expected one slice")
            d[key] = image[:3].float().mean(0, keepdim=True) if image.shape[0] > 1 else image.float()
        return d


def preprocessing(size: int) -> list[Any]:
    """Read, one channel, intensities to [0, 1], ``size``x``size`` pixels."""
    return [LoadChecked(("image",)), EnsureChannelFirstd("image"), AsGray2D("image"), ScaleIntensityd("image"),
            Resized("image", spatial_size=(size, size))]


def augmentation() -> list[Any]:
    return [RandFlipd("image", prob=0.5, spatial_axis=1), RandRotate90d("image", prob=0.5)]


def final(keys: Sequence[str] = ("image",)) -> EnsureTyped:
    """Plain tensors for the Trainer's default collation (MetaTensor metadata is not batched)."""
    return EnsureTyped(tuple(keys), data_type="tensor", dtype=torch.float32, track_meta=False)


def transforms(size: int, augment: bool) -> Compose:
    return Compose([*preprocessing(size), *(augmentation() if augment else []), final()])
