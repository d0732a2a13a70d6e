"""medical.segment: 3D segmentation with MONAI's U-Net or SegResNet.

    dlguide run medical.segment --out runs/spheres                 # synthetic spheres, the default
    dlguide run medical.segment --set dataset=mni-brain spacing=[2,2,2] --out runs/brain
    dlguide run medical.segment --set dataset=msd data_dir=Task09_Spleen intensity=range spacing=[1.5,1.5,2]
    dlguide predict runs/spheres scan.nii.gz dicom_series/ --out labels/

Training sees random patches; validation and test segment whole volumes with sliding-window
inference and report Dice and the 95th-percentile Hausdorff distance (mm) per foreground class.
``predict`` writes each label volume as NIfTI on the input's own grid and affine.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.utils import one_hot
from monai.transforms import Compose, Invertd
from torch import nn

from dlguide import (SCHEDULERS, DataSplits, RawInput, Task, TrainConfig, UsageError, check_fractions, cv_fold,
                     option)
from dlguide_medical.figures import Overlay, overlay_png
from dlguide_medical.files import check_input, input_name, input_path, reference_files
from dlguide_medical.metrics import SegmentationScores
from dlguide_medical.msd import read_msd, split_cases, write_nifti
from dlguide_medical.seg_data import WholeVolumes, augmentation, collate_volumes, preprocessing, training_patches
from dlguide_medical.sources import synthetic_msd

MAX_OVERLAYS = 32  # test cases drawn as PNG; a large test split would otherwise spend minutes drawing


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
        return synthetic_msd(self.synthetic_cases, self.synthetic_size, self.synthetic_classes, self.synthetic_noise)


class SegmentationTask(Task):
    """Segment 3D volumes; test with Dice and HD95 per class and a PNG per test case.

    ``meta`` holds ``classes`` (foreground label names), ``channels`` (image channels), the
    data set, its folder and the case names of each split; predict needs only the first two.
    """

    Config = SegmentationConfig
    config: SegmentationConfig
    metric_modes = {"dice": "max", "hd95": "min"}
    input_kind = "file"  # a NIfTI file, a DICOM file or (a local path) a DICOM series folder
    supports_folds = True
    export_input_names = ("image",)  # one batch of sliding-window patches: the network, not the window
    export_output_names = ("logits",)
    test_files: Sequence[str] = ()
    writes_files = True
    predict_batch_size = 1  # volumes of any size; one is already many sliding windows

    def __init__(self, config: SegmentationConfig, name: str = "") -> None:
        super().__init__(config, name)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.overlays: list[Overlay] = []
        # output stems claimed by the inputs of the predict call being decoded, with those inputs

    # -- data and model -----------------------------------------------------------------
    def build_data(self) -> DataSplits:
        cfg = self.config
        folder = self.registered("dataset", cfg.dataset)(cfg)
        data = read_msd(folder)
        train, val, test = split_cases(data.training, cfg.val_fraction, cfg.test_fraction, cfg.seed,
                                       has_validation=bool(data.validation))
        val = val or data.validation
        pooled = train + val
        folds = cv_fold(cfg, [0] * len(pooled))
        if folds is not None:  # dlguide cv: one fold of the train + val cases is the validation split
            train, val = ([pooled[i] for i in part] for part in folds)
        self.meta = {"dataset": cfg.dataset, "folder": str(folder), "classes": data.classes,
                     "channels": data.channels,
                     "cases": {"train": [c["name"] for c in train], "val": [c["name"] for c in val],
                               "test": [c["name"] for c in test]}}
        self.test_files = [case["image"] for case in test]
        pre = self.preprocessing()
        return DataSplits(
            train=training_patches(train, pre, augmentation(cfg.patch_size, cfg.samples_per_volume, cfg.flip_prob),
                                  cfg.seed),
            val=WholeVolumes(val, pre) if val else None,
            test=WholeVolumes(test, pre) if test else None,
        )

    def preprocessing(self, allowed: tuple[str, ...] = ("nifti",)) -> Compose:
        cfg = self.config
        return preprocessing(cfg.spacing, cfg.intensity, cfg.intensity_range, allowed)

    def build_model(self) -> nn.Module:
        return self.build_registered_model(self.config.model)

    def collate(self, samples: list[Any]) -> dict[str, torch.Tensor]:
        return collate_volumes(samples)

    # -- steps --------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(self.model(batch["image"]), batch["label"])

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for whole volumes ``[B, C, *spatial]`` by sliding-window inference."""
        cfg = self.config
        return sliding_window_inference(images, roi_size=tuple(cfg.patch_size), sw_batch_size=cfg.sw_batch_size,
                                        predictor=self.model, overlap=cfg.sw_overlap, mode="gaussian")

    def configure_metrics(self, stage: str) -> dict[str, Any]:
        return dict(SegmentationScores(self.meta["classes"], self.config.spacing).views())

    def on_evaluation_start(self, stage: str) -> None:
        if stage == "test":
            self.overlays = []  # the pictures of this test pass only

    def validation_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        return self._evaluate(batch, metrics, draw=False)

    def test_step(self, batch: Any, metrics: Mapping[str, Any]) -> torch.Tensor:
        return self._evaluate(batch, metrics, draw=True)

    def _evaluate(self, batch: Any, metrics: Mapping[str, Any], draw: bool) -> torch.Tensor:
        scores: SegmentationScores = metrics["dice"].scores
        logits = self.segment(batch["image"])
        n_classes = logits.shape[1]
        losses = []
        for i, shape in enumerate(batch["shape"].tolist()):
            crop = _crop(shape)  # drop the padding of collate_volumes
            item_logits, label = logits[i][crop][None], batch["label"][i][crop][None].long()
            losses.append(self.loss(item_logits.float(), label))
            pred = item_logits.argmax(1, keepdim=True)
            case = scores.update(one_hot(pred, n_classes, dim=1), one_hot(label, n_classes, dim=1))
            if self.run is not None:  # in the test pass: the case's mean Dice and loss, for dlguide compare
                self.run.record(dice=case["dice"].nanmean(1), loss=losses[-1].detach().reshape(1))
            if draw and len(self.overlays) < MAX_OVERLAYS:
                case = self.meta["cases"]["test"][int(batch["case"][i])]
                self.overlays.append(Overlay.middle_slice(case, batch["image"][i][crop][0], label[0, 0], pred[0, 0]))
        return torch.stack(losses).mean()

    # -- after training -----------------------------------------------------------------
    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
        folder = run_dir / "test_cases"
        folder.mkdir(exist_ok=True)
        return [overlay_png(o, list(self.meta["classes"]), folder / f"{o.case}.png") for o in self.overlays]

    # -- inference: a volume in, a label volume on the input's grid out -------------------
    @functools.cached_property
    def _predict_preprocessing(self) -> Compose:
        return self.preprocessing(allowed=("nifti", "dicom"))

    @functools.cached_property
    def _invert(self) -> Invertd:
        return Invertd("pred", transform=self._predict_preprocessing, orig_keys="image", nearest_interp=True)

    def output_name(self, raw: RawInput) -> str:
        """``<stem>_seg.nii.gz``: two inputs of one call that share it are refused before any is read."""
        return f"{_stem(raw)}_seg.nii.gz"

    def decode(self, raw: RawInput) -> dict[str, Any]:
        """Read and preprocess one volume: ``image`` is a MetaTensor whose metadata and applied
        transforms let ``encode`` put the labels back on the input's grid."""
        with input_path(raw) as path:
            check_input(path, ("nifti", "dicom"))
            image = self._predict_preprocessing({"image": str(path)})["image"]
        channels = int(self.meta["channels"])
        if image.dim() != 4 or image.shape[0] != channels:
            raise UsageError(f"{input_name(raw)}: image of shape {tuple(image.shape[1:])} with {image.shape[0]} "
                             f"channels; this run segments 3D volumes with {channels} channel(s)")
        return {"image": image}

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """The test cases' image files as a client uploads them."""
        return reference_files(self.test_files, count)

    def describe_output(self, output: torch.Tensor) -> float:
        """The share of voxels labelled as any structure (not background)."""
        return float((output > 0).float().mean())

    def predict_step(self, batch: Any) -> torch.Tensor:
        """Label volumes ``[B, 1, *spatial]``: the argmax of the sliding-window logits."""
        return self.segment(batch["image"].float()).argmax(1, keepdim=True).to(torch.uint8)

    def encode(self, output: torch.Tensor, sample: dict[str, Any], raw: RawInput, *,
               out_dir: Path | None = None) -> dict[str, Any]:
        """Invert the resampling and reorientation, write ``<stem>_seg.nii.gz`` into ``out_dir``, and
        report it with its shape and the voxels of each class."""
        assert out_dir is not None  # writes_files: dlguide.predict asks for a folder
        image: MetaTensor = sample["image"]
        labels = output[_crop(image.shape[1:])]  # without the padding of a batch of several volumes
        pred = MetaTensor(labels, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        restored = self._invert({"image": image, "pred": pred})["pred"]
        label = np.asarray(restored[0].numpy(), dtype=np.uint8)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / self.output_name(raw)
        write_nifti(label, np.asarray(restored.affine, dtype=np.float64), target)
        counts = np.bincount(label.ravel(), minlength=len(self.meta["classes"]) + 1)
        return {"path": input_name(raw), "output": str(target), "shape": list(label.shape),
                "voxels": {c: int(n) for c, n in zip(self.meta["classes"], counts[1:])}}

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        voxels = ", ".join(f"{c} {n} voxels" for c, n in row["voxels"].items())
        return f"{row['path']} -> {row['output']} ({'x'.join(map(str, row['shape']))}; {voxels})"


def _crop(shape: Sequence[int]) -> tuple[slice, ...]:
    """The channel axis whole and each spatial axis cut to ``shape``."""
    return (slice(None),) + tuple(slice(0, int(s)) for s in shape)


def _stem(raw: RawInput) -> str:
    """The input's file or folder name without its image suffix (``scan`` of ``scan.nii.gz``)."""
    name = Path(raw.name or (raw.path.name if raw.path is not None else "") or "input").name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
