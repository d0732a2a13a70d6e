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

from dlguide import DataSplits, RawInput, Task, UsageError, cv_fold
from dlguide_medical.figures import Overlay, overlay_png
from dlguide_medical.config import SegmentationConfig
from dlguide_medical.files import check_input, input_name, input_path, reference_files
from dlguide_medical.metrics import SegmentationScores
from dlguide_medical.msd import read_msd, split_cases, write_nifti
from dlguide_medical.seg_data import WholeVolumes, augmentation, collate_volumes, preprocessing, training_patches

MAX_OVERLAYS = 32  # test cases drawn as PNG; a large test split would otherwise spend minutes drawing




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
        report it (``file``) with its shape and the voxels of each class; the core names the input."""
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
        return {"file": str(target), "shape": list(label.shape),
                "voxels": {c: int(n) for c, n in zip(self.meta["classes"], counts[1:])}}

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        voxels = ", ".join(f"{c} {n} voxels" for c, n in row["voxels"].items())
        return f"{row['input']}  ->  {row['file']}  ({'x'.join(map(str, row['shape']))}; {voxels})"


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
