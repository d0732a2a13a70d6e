"""Every medical loader fed hostile data (empty, truncated, wrong type, wrong shape, NaN, label values
outside dataset.json's labels, a case listed twice, a class without images, one class): each ends
before the first epoch in one line naming the bad file or value and what was expected, a UsageError
(exit 2), and leaves no run directory."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file, spheres, write_msd_folder
from PIL import Image

from dlguide import UsageError, run_task
from dlguide.testing import run_cli
from dlguide_medical.msd import write_nifti

SEG = ["epochs=1", "limit_train_batches=1", "batch_size=2", "samples_per_volume=2", "patch_size=[16,16,16]",
       "channels=[8,16]", "sw_batch_size=8", "seed=0", "val_fraction=0.25", "test_fraction=0.25"]
CLS = ["epochs=1", "limit_train_batches=1", "batch_size=8", "image_size=32", "seed=0"]
SHAPE = (20, 20, 16)


# -- spoiling a Decathlon folder --------------------------------------------------------------
def edit_index(folder: Path, change: Callable[[dict], object]) -> None:
    index = json.loads((folder / "dataset.json").read_text())
    change(index)
    (folder / "dataset.json").write_text(json.dumps(index))


def halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def halve_voxels(path: Path) -> None:
    """A NIfTI file whose header survives but whose voxels stop half way (a valid gzip stream)."""
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))


def replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def label(folder: Path, values: np.ndarray) -> None:
    write_nifti(values, OBLIQUE, folder / "labelsTr" / "case1.nii.gz")


def sphere_label(scale: float, dtype: type = np.float32) -> np.ndarray:
    return (spheres(SHAPE, 1)[1].astype(np.float32) * scale).astype(dtype)


def nan_label() -> np.ndarray:
    values = sphere_label(1)
    values[0, 0, 0] = np.nan
    return values


IMAGE, LABEL = "imagesTr/case0.nii.gz", "labelsTr/case0.nii.gz"
MSD_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "empty-folder": (lambda f: shutil.rmtree(f) or f.mkdir(),
                     r"is not a Medical Segmentation Decathlon folder: dataset\.json is missing"),
    "empty-dataset.json": (lambda f: (f / "dataset.json").write_text(""),
                           r"dataset\.json: not valid JSON \(Expecting value: line 1 column 1"),
    "truncated-dataset.json": (lambda f: halve(f / "dataset.json"), r"dataset\.json: not valid JSON \("),
    "dataset.json-folder": (lambda f: replace_with_folder(f / "dataset.json"),
                            r"dataset\.json is a folder; expected the JSON file that lists the cases"),
    "dataset.json-list": (lambda f: (f / "dataset.json").write_text("[]"),
                          r"dataset\.json: expected a non-empty 'training' list"),
    "entry-without-label": (lambda f: edit_index(f, lambda d: d["training"][1].pop("label")),
                            r"dataset\.json: 'training' entry 2 has no 'label' file name; expected \{\"image\""),
    "entry-image-number": (lambda f: edit_index(f, lambda d: d["training"][0].update(image=5)),
                           r"dataset\.json: 'training' entry 1 has no 'image' file name"),
    "entry-text": (lambda f: edit_index(f, lambda d: d["training"].__setitem__(0, IMAGE)),
                   r"dataset\.json: 'training' entry 1 is not an object"),
    "validation-not-a-list": (lambda f: edit_index(f, lambda d: d.update(validation="imagesTr")),
                              r"dataset\.json: 'validation' is str; expected a list"),
    "case-listed-twice": (lambda f: edit_index(f, lambda d: d["training"].append(dict(d["training"][0]))),
                          r"dataset\.json lists .*imagesTr/case0\.nii\.gz more than once; expected each case once"),
    "truncated-image": (lambda f: halve(f / IMAGE),
                        r"imagesTr/case0\.nii\.gz: cannot be read as a NIfTI volume \(Compressed file ended"),
    "truncated-image-voxels": (lambda f: halve_voxels(f / IMAGE),
                               r"imagesTr/case0\.nii\.gz: cannot be read as a NIfTI volume \(Expected 25600 bytes"),
    "truncated-label-voxels": (lambda f: halve_voxels(f / LABEL),
                               r"labelsTr/case0\.nii\.gz: cannot be read as a NIfTI volume \(Expected 6400 bytes"),
    "text-as-nifti": (lambda f: (f / IMAGE).write_text("patient notes"),
                      r"imagesTr/case0\.nii\.gz: not a readable NIfTI file \("),
    "empty-nifti": (lambda f: (f / LABEL).write_bytes(b""),
                    r"labelsTr/case0\.nii\.gz: not a readable NIfTI file \(Empty file"),
    "folder-as-nifti": (lambda f: replace_with_folder(f / IMAGE),
                        r"imagesTr/case0\.nii\.gz: a folder; expected the image as a \.nii\.gz or \.nii file"),
    "dicom-as-image": (lambda f: edit_index(f, lambda d: d["training"][0].update(image=str(dicom_file(
        "CT_small.dcm")))), r"CT_small\.dcm: not a NIfTI file; expected the image as a \.nii\.gz or \.nii file"),
    "shape-mismatch": (lambda f: label(f, np.zeros((20, 20, 15), np.uint8)),
                       r"image .*imagesTr/case1\.nii\.gz has shape 20x20x16 but its label .*labelsTr/case1\.nii\.gz "
                       r"has shape 20x20x15; expected the same spatial shape"),
    "two-channels-one-modality": (lambda f: write_nifti(np.stack([spheres(SHAPE, 1)[0]] * 2, -1), OBLIQUE,
                                                        f / "imagesTr" / "case1.nii.gz"),
                                  r"imagesTr/case1\.nii\.gz has shape 20x20x16x2, 2 channel\(s\), but dataset\.json's "
                                  r"'modality' lists 1"),
    "one-channel-two-modalities": (lambda f: edit_index(f, lambda d: d.update(modality={"0": "T1", "1": "T2"})),
                                   r"imagesTr/case0\.nii\.gz has shape 20x20x16, 1 channel\(s\), but dataset\.json's "
                                   r"'modality' lists 2"),
    "nan-image": (lambda f: write_nifti(np.full(SHAPE, np.nan, np.float32), OBLIQUE, f / "imagesTr" / "case1.nii.gz"),
                  r"imagesTr/case1\.nii\.gz: all 6400 voxels are NaN or infinite"),
    "nan-label": (lambda f: label(f, nan_label()),
                  r"label .*labelsTr/case1\.nii\.gz: 1 of 6400 voxels are NaN or infinite; expected integer label "
                  r"values 0\.\.1"),
    "label-value-5": (lambda f: label(f, sphere_label(5, np.uint8)),
                      r"label .*labelsTr/case1\.nii\.gz holds the value 5; expected integer label values 0\.\.1 "
                      r"\(the keys of dataset\.json's 'labels'\)"),
    "negative-label": (lambda f: label(f, sphere_label(-1)), r"labelsTr/case1\.nii\.gz holds the value -1"),
    "fractional-label": (lambda f: label(f, sphere_label(0.5)), r"labelsTr/case1\.nii\.gz holds the value 0\.5"),
    "image-as-its-label": (lambda f: edit_index(f, lambda d: [e.update(label=e["image"]) for e in d["training"]]),
                           r"label .*imagesTr/case0\.nii\.gz holds the value -?0\.\d+; expected integer label values"),
    "one-case": (lambda f: edit_index(f, lambda d: d.update(training=d["training"][:1])),
                 r"1 labelled cases cannot be split into train, val \(1\) and test \(1\)"),
}


@pytest.mark.parametrize("case", sorted(MSD_CASES))
def test_hostile_decathlon_folders_are_one_line_usage_errors(runtime, tmp_path, case):
    spoil, phrase = MSD_CASES[case]
    folder = write_msd_folder(tmp_path / "Task01_Tiny", cases=4)
    spoil(folder)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=phrase) as info:
        run_task("medical.segment", overrides=[*SEG, "dataset=msd", f"data_dir={folder}"], out=out, runtime=runtime,
                 progress="none")
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_synthetic_noise_must_be_finite(runtime, tmp_path):
    with pytest.raises(UsageError, match=r"^invalid value for 'synthetic_noise': nan; expected a finite value >= 0$"):
        run_task("medical.segment", overrides=[*SEG, "synthetic_noise=nan"], out=tmp_path / "run", runtime=runtime,
                 progress="none")
    assert not (tmp_path / "run").exists()


# -- spoiling a class folder (medical.classify) ------------------------------------------------
def pictures(folder: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / name / f"{i}.png")


def with_pictures(extra: Callable[[Path], object]) -> Callable[[Path], object]:
    return lambda f: (pictures(f), extra(f))


def half_of(source: Path) -> bytes:
    data = source.read_bytes()
    return data[: len(data) // 2]


def nifti_slice(path: Path, values: np.ndarray, spoil: Callable[[Path], None] | None = None) -> None:
    write_nifti(values, OBLIQUE, path)
    if spoil is not None:
        spoil(path)


SLICE = np.random.default_rng(0).random((40, 40, 1)).astype(np.float32)
FOLDER_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "empty-folder": (lambda f: None, r"has 0 class subfolder\(s\); expected at least 2"),
    "class-without-images": (with_pictures(lambda f: (f / "c").mkdir()), r"class folder .*/c holds no images"),
    "one-class": (lambda f: pictures(f, ("a",)), r"has 1 class subfolder\(s\); expected at least 2"),
    "text-as-png": (with_pictures(lambda f: (f / "a" / "x.png").write_text("hello")),
                    r"a/x\.png: cannot be read as a PNG image"),
    "truncated-png": (with_pictures(lambda f: halve(f / "b" / "0.png")),
                      r"b/0\.png: cannot be read as a PNG image \(image file is truncated\)"),
    "truncated-dicom": (with_pictures(lambda f: (f / "a" / "x.dcm").write_bytes(half_of(dicom_file("CT_small.dcm")))),
                        r"a/x\.dcm: cannot be read as a DICOM image \(The number of bytes of pixel data is less"),
    "text-as-dicom": (with_pictures(lambda f: (f / "a" / "x.dcm").write_text("hello")),
                      r"a/x\.dcm: cannot be read as a DICOM image"),
    "truncated-nifti": (with_pictures(lambda f: nifti_slice(f / "a" / "x.nii.gz", SLICE, halve_voxels)),
                        r"a/x\.nii\.gz: cannot be read as a NIfTI volume \(Expected 6400 bytes"),
    "nan-nifti": (with_pictures(lambda f: nifti_slice(f / "b" / "x.nii.gz", np.full((40, 40, 1), np.nan, np.float32))),
                  r"b/x\.nii\.gz: all 1600 voxels are NaN or infinite"),
    "volume-not-slice": (with_pictures(lambda f: nifti_slice(f / "a" / "x.nii.gz", np.zeros((8, 8, 4), np.float32))),
                         r"a/x\.nii\.gz: image of shape \(8, 8, 4\) is not 2D; expected one slice"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_hostile_class_folders_are_one_line_usage_errors(runtime, tmp_path, case):
    build, phrase = FOLDER_CASES[case]
    folder = tmp_path / "images"
    folder.mkdir()
    build(folder)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=phrase) as info:
        run_task("medical.classify", overrides=[*CLS, "dataset=folder", f"data_dir={folder}"], out=out,
                 runtime=runtime, progress="none")
    assert "\n" not in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("task, case", [("medical.segment", "label-value-5"), ("medical.classify", "one-class")])
def test_the_command_line_prints_one_line_and_exits_2(tmp_path, task, case):
    if task == "medical.segment":
        spoil, phrase = MSD_CASES[case]
        folder = write_msd_folder(tmp_path / "Task01_Tiny", cases=4)
        spoil(folder)
        sets = [*SEG, "dataset=msd", f"data_dir={folder}"]
    else:
        build, phrase = FOLDER_CASES[case]
        folder = tmp_path / "images"
        folder.mkdir()
        build(folder)
        sets = [*CLS, "dataset=folder", f"data_dir={folder}"]
    out = tmp_path / "run"
    res = run_cli("run", task, "--out", out, "--set", *sets)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("dlguide: error: ") and re.search(phrase, lines[0]), lines[0]
    assert not out.exists()


def test_one_image_per_class_names_the_cause(tmp_path, runtime):
    from PIL import Image

    from dlguide import UsageError, run_task

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("L", (8, 8), 128).save(tmp_path / "imgs" / name / "x.png")
    with pytest.raises(UsageError, match=r"^2 images in 2 classes leave no validation image with val_fraction=0\.15"):
        run_task("medical.classify", overrides=["dataset=folder", f"data_dir={tmp_path / 'imgs'}", "epochs=1"],
                 out=tmp_path / "run", runtime=runtime, progress="none")
    assert not (tmp_path / "run").exists()
