"""The data of medical.segment: MONAI transforms, cached datasets and their batching.

Every volume is read, turned to RAS, resampled to one voxel size and scaled once (cached by
``CacheDataset``); training then draws ``samples_per_volume`` random patches per volume, centred
on foreground and background alike, and flips them. Validation and test volumes stay whole:
the task segments them with sliding-window inference. ``collate_volumes`` batches all of them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
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


def training_patches(cases: Sequence[Case], pre: Compose, augment: list[Any], seed: int = 0) -> SeededCache:
    """Cached preprocessed training volumes that yield ``samples_per_volume`` random patches each."""
    items = [{"image": c["image"], "label": c["label"]} for c in cases]
    return SeededCache(items, Compose([*pre.transforms, *augment, EnsureTyped(KEYS, track_meta=False)]), seed)


class WholeVolumes(Dataset):
    """Cached evaluation volumes, each with ``case``, its index in the split (to name its picture)."""

    def __init__(self, cases: Sequence[Case], pre: Compose) -> None:
        items = [{"image": c["image"], "label": c["label"]} for c in cases]
        self.dataset = cached(items, Compose([*pre.transforms, EnsureTyped(KEYS, track_meta=False)]))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "case": index}


def collate_volumes(samples: Sequence[Any]) -> dict[str, torch.Tensor]:
    """One batch of ``image`` (``[N, C, *spatial]``), ``shape`` (each volume's own size) and, where
    the samples have them, ``label`` and ``case``.

    A sample is a dict of one volume (evaluation, predict) or the list of a training volume's
    patches, which join the batch one by one. Volumes of different sizes are padded at their far
    end to the largest in the batch; ``shape`` crops predictions back.
    """
    items = [item for sample in samples for item in (sample if isinstance(sample, list) else [sample])]
    shapes = [tuple(item["image"].shape[1:]) for item in items]
    largest = [max(size[d] for size in shapes) for d in range(3)]

    def stack(key: str) -> torch.Tensor:
        padded = []
        for item, size in zip(items, shapes):
            tensor = item[key].as_tensor() if isinstance(item[key], MetaTensor) else item[key]
            # F.pad lists (before, after) per axis from the last axis backwards
            padding = [p for d in reversed(range(3)) for p in (0, largest[d] - size[d])]
            padded.append(torch.nn.functional.pad(tensor, padding))
        return torch.stack(padded)

    batch = {"image": stack("image"), "shape": torch.tensor(shapes)}
    if "label" in items[0]:
        batch["label"] = stack("label")
    if "case" in items[0]:
        batch["case"] = torch.tensor([item["case"] for item in items])
    return batch
