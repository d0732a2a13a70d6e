"""The Medical Segmentation Decathlon layout: ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.

Every segmentation data set goes through ``read_msd``: a downloaded MSD task, and the embedded
synthetic and MNI152 sets, which ``write_msd`` first writes as NIfTI files in this same layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import NibabelWriter, check_missing_files, load_decathlon_datalist

from dlguide import UsageError, first_line

Case = dict[str, str]  # {"name": ..., "image": path, "label": path}


@dataclasses.dataclass
class MsdDataset:
    """The labelled cases of an MSD folder and what its ``dataset.json`` says about them."""

    name: str
    folder: Path
    classes: list[str]  # foreground label names, in label-value order 1, 2, ...
    channels: int
    training: list[Case]
    validation: list[Case]  # MONAI's optional "validation" list; empty for MSD's own tasks


def cache_root() -> Path:
    """Where generated data sets are written once and then read like downloaded ones."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlguide" / "medical"


def read_msd(folder: Path) -> MsdDataset:
    """Read ``folder/dataset.json``; check that every listed file exists and each label fits its image."""
    index = folder / "dataset.json"
    if index.is_dir():
        raise UsageError(f"{index} is a folder; expected the JSON file that lists the cases")
    if not index.is_file():
        raise UsageError(f"{folder} is not a Medical Segmentation Decathlon folder: {index.name} is missing")
    try:
        props = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{index}: not valid JSON ({exc})") from None
    if not isinstance(props, dict) or not isinstance(props.get("training"), list) or not props["training"]:
        raise UsageError(f"{index}: expected a non-empty 'training' list of {{'image': ..., 'label': ...}} entries")
    labels = _label_names(index, props.get("labels"))
    modality = props.get("modality") or {"0": "image"}
    lists = {}
    for key in ("training", "validation"):
        if key not in props:
            lists[key] = []
            continue
        _check_entries(index, key, props[key])
        try:
            items = load_decathlon_datalist(index, is_segmentation=True, data_list_key=key, base_dir=folder)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{index}: malformed '{key}' list ({exc})") from None
        missing = check_missing_files(items, keys=("image", "label"))
        if missing:
            raise UsageError(f"{index} lists {missing[0]}, which does not exist"
                             + (f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""))
        lists[key] = [_case(item) for item in items]
    seen: set[str] = set()
    for case in lists["training"] + lists["validation"]:
        if case["image"] in seen:  # a case listed twice could be trained on and tested on
            raise UsageError(f"{index} lists {case['image']} more than once; expected each case once")
        seen.add(case["image"])
        check_case(case, channels=len(modality) if isinstance(modality, dict) else None, classes=len(labels))
    return MsdDataset(str(props.get("name") or folder.name), folder, labels, len(modality),
                      lists["training"], lists["validation"])


def _label_names(index: Path, labels: Any) -> list[str]:
    if not isinstance(labels, dict) or not labels:
        raise UsageError(f"{index}: expected 'labels' like {{\"0\": \"background\", \"1\": \"tumour\"}}")
    try:
        by_value = {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        raise UsageError(f"{index}: 'labels' keys must be label values 0, 1, ...; got {sorted(labels)}") from None
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise UsageError(f"{index}: 'labels' must number 0 (background), 1, ... without gaps; got {sorted(by_value)}")
    return [by_value[v] for v in range(1, len(by_value))]


def _check_entries(index: Path, key: str, entries: Any) -> None:
    """Each entry names its image and label files (MONAI's reader fails on others with a message
    holding the whole entry, or not at all)."""
    if not isinstance(entries, list):
        raise UsageError(f"{index}: '{key}' is {type(entries).__name__}; expected a list of "
                         "{'image': ..., 'label': ...} entries")
    for number, entry in enumerate(entries, start=1):
        problem = ("is not an object" if not isinstance(entry, dict) else
                   next((f"has no {k!r} file name" for k in ("image", "label")
                         if not entry.get(k) or not isinstance(entry[k], (str, list))), ""))
        if problem:
            raise UsageError(f"{index}: '{key}' entry {number} {problem}; expected "
                             "{\"image\": \"./imagesTr/NAME.nii.gz\", \"label\": \"./labelsTr/NAME.nii.gz\"}")


def _case(item: dict[str, Any]) -> Case:
    image = item["image"]
    if isinstance(image, list):  # MONAI allows one file per channel
        raise UsageError(f"multi-file images are not supported: {image}; give one 4D NIfTI file per case")
    name = Path(str(image)).name
    for suffix in (".nii.gz", ".nii"):
        name = name.removesuffix(suffix)
    return {"name": name, "image": str(image), "label": str(item["label"])}


def check_case(case: Case, *, channels: int | None = None, classes: int | None = None) -> None:
    """Read both NIfTI headers and compare the spatial shapes; with ``channels`` (the modalities of
    dataset.json) check the image's channels, with ``classes`` (its foreground labels) read the
    label's voxels and check they are integers ``0..classes``."""
    shapes = []
    for key in ("image", "label"):
        path = Path(case[key])
        if path.is_dir() or not path.name.lower().endswith((".nii", ".nii.gz")):
            what = "a folder" if path.is_dir() else "not a NIfTI file"
            raise UsageError(f"{path}: {what}; expected the {key} as a .nii.gz or .nii file")
        try:
            shapes.append(tuple(int(s) for s in nib.load(path).shape))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for files that are not NIfTI
            raise UsageError(f"{path}: not a readable NIfTI file ({first_line(exc, 160)})") from None
    image, label = shapes
    if image[:3] != label[:3] or len(label) > 3 and any(s != 1 for s in label[3:]):
        raise UsageError(f"image {case['image']} has shape {_fmt(image)} but its label {case['label']} has shape "
                         f"{_fmt(label)}; expected the same spatial shape")
    found = image[3] if len(image) > 3 else 1
    if channels is not None and found != channels:
        raise UsageError(f"image {case['image']} has shape {_fmt(image)}, {found} channel(s), but dataset.json's "
                         f"'modality' lists {channels}; expected one channel per modality")
    if classes is not None:
        check_label_values(Path(case["label"]), classes)


def check_label_values(path: Path, classes: int) -> None:
    """A label volume holds integers ``0..classes``: another value fails inside the loss, and a
    fraction (an image given as its own label) trains on nonsense."""
    try:
        values = np.asanyarray(nib.load(path).dataobj)
    except Exception as exc:  # noqa: BLE001 - a truncated file fails only once its voxels are read
        raise UsageError(f"{path}: cannot be read as a NIfTI volume ({first_line(exc, 160)})") from None
    expected = f"expected integer label values 0..{classes} (the keys of dataset.json's 'labels')"
    if np.issubdtype(values.dtype, np.floating):
        bad = values.size - int(np.count_nonzero(np.isfinite(values)))
        if bad:
            raise UsageError(f"label {path}: {bad} of {values.size} voxels are NaN or infinite; {expected}")
        fraction = values[values != np.round(values)]
        if fraction.size:
            raise UsageError(f"label {path} holds the value {float(fraction.flat[0]):g}; {expected}")
    if values.size and (values.min() < 0 or values.max() > classes):
        wrong = values.min() if values.min() < 0 else values.max()
        raise UsageError(f"label {path} holds the value {float(wrong):g}; {expected}")


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def split_cases(cases: Sequence[Case], val_fraction: float, test_fraction: float, seed: int,
                has_validation: bool) -> tuple[list[Case], list[Case], list[Case]]:
    """A seeded shuffle into train, val and test; each held-out part keeps at least one case."""
    order = np.random.default_rng(seed).permutation(len(cases)).tolist()
    shuffled = [cases[i] for i in order]
    n_test = max(1, round(len(cases) * test_fraction)) if test_fraction > 0 else 0
    n_val = 0 if has_validation or val_fraction == 0 else max(1, round(len(cases) * val_fraction))
    if len(cases) - n_test - n_val < 1:
        raise UsageError(f"{len(cases)} labelled cases cannot be split into train, val ({n_val}) and test "
                         f"({n_test}); lower val_fraction or test_fraction or add cases")
    return shuffled[n_test + n_val:], shuffled[n_test:n_test + n_val], shuffled[:n_test]


def write_msd(folder: Path, name: str, classes: Sequence[str],
              cases: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]], description: str) -> Path:
    """Write ``(case name, image, label, affine)`` volumes as an MSD folder, all or nothing.

    The folder appears only once complete, so an interrupted write never leaves a half data set.
    """
    if (folder / "dataset.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        training = []
        for case, image, label, affine in cases:
            rel = {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
            write_nifti(image.astype(np.float32), affine, tmp / rel["image"])
            write_nifti(label.astype(np.uint8), affine, tmp / rel["label"])
            training.append(rel)
        index = {"name": name, "description": description, "tensorImageSize": "3D",
                 "modality": {"0": "image"}, "labels": {"0": "background", **{str(i + 1): c for i, c in
                                                                              enumerate(classes)}},
                 "numTraining": len(training), "numTest": 0, "training": training, "test": []}
        (tmp / "dataset.json").write_text(json.dumps(index, indent=2) + "\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same data set first
            if not (folder / "dataset.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_nifti(volume: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """One 3D volume (no channel axis) as NIfTI through MONAI's writer, with its affine as given."""
    writer = NibabelWriter(output_dtype=volume.dtype)
    # set_data_array would squeeze a one-slice volume (a single DICOM image) to 2D; the array is
    # already in NIfTI's (x, y, z) order with no channel, so it is handed over as it is
    writer.data_obj, writer.affine = volume, affine
    writer.write(str(path), verbose=False)
