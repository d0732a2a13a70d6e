"""The data of medical.segment: MONAI transforms, cached datasets and their batching.

Every volume is read, turned to RAS, resampled to one voxel size and scaled once (cached by
``CacheDataset``); training then draws ``samples_per_volume`` random patches per volume, centred
on foreground and background alike, and flips them. Validation and test volumes stay whole:
the task segments them with sliding-window inference.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    ScaleIntensityRanged,
    SpatialPad,
    SpatialPadd,
    Spacingd,
)
from torch.utils.data import Dataset

from dlguide_medical.caching import SeededCache, cached
from dlguide_medical.files import LoadChecked
from dlguide_medical.msd import Case

KEYS = ("image", "label")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # NIfTI's convention, given to silence a default change


def preprocessing(spacing: Sequence[float], intensity: str, intensity_range: Sequence[float],
                  allowed: tuple[str, ...] = ("nifti",)) -> Compose:
    """Read, channel first, RAS, resample, scale: the deterministic steps shared by training,
    evaluation and predict (which has no label, hence ``allow_missing_keys``)."""
    steps: list[MapTransform] = [
        LoadChecked(KEYS, allowed, allow_missing_keys=True),
        EnsureChannelFirstd(KEYS, allow_missing_keys=True),
        AsVolume(KEYS, allow_missing_keys=True),
        Orientationd(KEYS, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=True),
        Spacingd(KEYS, pixdim=tuple(spacing), mode=("bilinear", "nearest"), allow_missing_keys=True),
    ]
    if intensity == "range":  # CT: a fixed Hounsfield window mapped to [0, 1]
        low, high = intensity_range
        steps.append(ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:  # MR and anything without a physical scale: zero mean, unit variance per volume and channel
        steps.append(NormalizeIntensityd("image", channel_wise=True))
    return Compose(steps)


class AsVolume(MapTransform):
    """A single 2D slice (one DICOM file) as a volume one voxel deep; MONAI's reader already gives
    it a 4x4 affine, so the slice keeps its place in the patient's space."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].dim() == 3:
                d[key] = d[key].unsqueeze(-1)
        return d


def augmentation(patch_size: Sequence[int], samples_per_volume: int, flip_prob: float) -> list[Any]:
    """Random patches, half centred on foreground, then flips along each axis."""
    steps: list[Any] = [
        SpatialPadd(KEYS, spatial_size=tuple(patch_size)),  # volumes thinner than a patch still give whole patches
        RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=tuple(patch_size), pos=1, neg=1,
                               num_samples=samples_per_volume),
    ]
    if flip_prob > 0:
        steps += [RandFlipd(KEYS, prob=flip_prob, spatial_axis=axis) for axis in range(3)]
    return steps


def training_patches(cases: Sequence[Case], pre: Compose, augment: list[Any]) -> SeededCache:
    """Cached preprocessed training volumes that yield ``samples_per_volume`` random patches each."""
    items = [{"image": c["image"], "label": c["label"]} for c in cases]
    return SeededCache(items, Compose([*pre.transforms, *augment, EnsureTyped(KEYS, track_meta=False)]))


class WholeVolumes(Dataset):
    """Evaluation volumes padded at their far end to the largest shape among them, so the Trainer's
    default collation can batch volumes of different sizes; ``shape`` keeps each one's own size
    (to crop predictions back) and ``case`` its index in the split."""

    def __init__(self, cases: Sequence[Case], pre: Compose) -> None:
        items = [{"image": c["image"], "label": c["label"]} for c in cases]
        self.dataset = cached(items, Compose([*pre.transforms, EnsureTyped(KEYS, track_meta=False)]))
        self.shapes = [tuple(self.dataset[i]["image"].shape[1:]) for i in range(len(self.dataset))]
        largest = tuple(max(s[d] for s in self.shapes) for d in range(3))
        self.pad = SpatialPad(largest, method="end")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        return {"image": self.pad(item["image"]), "label": self.pad(item["label"]),
                "shape": torch.tensor(self.shapes[index]), "case": index}


def merge_patches(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one training batch, ``[volumes * samples_per_volume, C, *patch]``.

    The default collation turns a batch of per-volume patch lists into one dict per patch slot
    (MONAI's ``list_data_collate`` would flatten them; the Trainer's loader takes no collate_fn).
    """
    slots = batch if isinstance(batch, list) else [batch]
    return torch.cat([s["image"] for s in slots]), torch.cat([s["label"] for s in slots])
