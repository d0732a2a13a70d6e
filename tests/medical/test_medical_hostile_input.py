"""Hostile medical input: volumes of NaN or infinite values are refused in one line naming the
file (reading, predict of both tasks, uploads, the command line, training data), never turned
into an empty segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OBLIQUE, spheres, write_msd_folder

import dlguide_medical.plugin
from dlguide import RawInput, UsageError, predict_run, run_task
from dlguide._cli import main as cli_main
from dlguide_medical.files import load_image
from dlguide_medical.msd import write_nifti

SEG_TINY = ["epochs=1", "limit_train_batches=1", "batch_size=2", "samples_per_volume=2", "patch_size=[16,16,16]",
            "channels=[8,16]", "sw_batch_size=8", "seed=0"]
CLASS_TINY = ["epochs=1", "limit_train_batches=1", "batch_size=8", "image_size=32", "seed=0"]
SHAPE = (20, 20, 16)


def volume(kind: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A finite sphere volume, then spoilt as ``kind`` says."""
    image = spheres(shape, 4)[0] if len(shape) == 3 else np.random.default_rng(0).random(shape).astype(np.float32)
    if kind == "nan":
        image[...] = np.nan
    elif kind == "inf":
        image[...] = np.inf
    elif kind == "-inf":
        image[...] = -np.inf
    elif kind == "some-nan":
        image[:2] = np.nan
    elif kind == "too-large":  # finite in 64 bits, infinite once read as 32-bit floats
        image = image.astype(np.float64)
        image[0, 0, 0] = 1e300
    return image


def write_scan(path, kind: str, shape: tuple[int, ...] = SHAPE):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(volume(kind, shape), OBLIQUE, path)
    return path


@pytest.fixture(scope="module")
def seg_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("segment") / "run"
    return run_task("medical.segment", overrides=[*SEG_TINY, "synthetic_cases=5", "synthetic_size=32",
                                                  "val_fraction=0.2", "test_fraction=0.2"],
                    out=out, runtime=runtime, progress="none")


@pytest.fixture(scope="module")
def class_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "run"
    return run_task("medical.classify", overrides=[*CLASS_TINY, "synthetic_per_class=10"], out=out,
                    runtime=runtime, progress="none")


@pytest.mark.parametrize(("kind", "share"), [("nan", "all 6400"), ("inf", "all 6400"), ("-inf", "all 6400"),
                                             ("some-nan", "640 of 6400"), ("too-large", "1 of 6400")])
def test_reading_a_non_finite_volume_is_a_one_line_usage_error(tmp_path, kind, share):
    path = write_scan(tmp_path / f"{kind}.nii.gz", kind)
    with pytest.raises(UsageError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: {share} voxels are NaN or infinite; expected an image of finite values"


def test_finite_volumes_of_any_type_are_read(tmp_path):
    assert load_image(write_scan(tmp_path / "fine.nii.gz", "finite")).shape == SHAPE
    labels = tmp_path / "labels.nii.gz"
    write_nifti(spheres(SHAPE, 4)[1], OBLIQUE, labels)  # uint8
    assert load_image(labels).shape == SHAPE


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "some-nan"])
def test_segment_predict_refuses_a_non_finite_volume(seg_run, runtime, tmp_path, kind):
    path = write_scan(tmp_path / "scan.nii.gz", kind)
    with pytest.raises(UsageError, match=rf"^{path}: .* voxels are NaN or infinite") as info:
        predict_run(seg_run.run_dir, [str(path)], out=tmp_path / "out", runtime=runtime)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # no empty segmentation written


def test_segment_predict_names_an_uploaded_non_finite_volume(seg_run, runtime, tmp_path):
    path = write_scan(tmp_path / "scan.nii.gz", "nan")
    upload = RawInput(value=path.read_bytes(), name="upload.nii.gz")
    with pytest.raises(UsageError, match=r"^upload\.nii\.gz: all 6400 voxels are NaN or infinite"):
        predict_run(seg_run.run_dir, [upload], out=tmp_path / "out", runtime=runtime)


def test_segment_cli_predict_of_a_nan_volume_exits_2_in_one_line(seg_run, dlguide_runtime, tmp_path, capsys):
    good = write_scan(tmp_path / "good.nii.gz", "finite")
    bad = write_scan(tmp_path / "bad.nii.gz", "nan")
    dlguide_runtime(dlguide_medical.plugin)
    code = cli_main(["predict", str(seg_run.run_dir), str(good), str(bad), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().splitlines() == [
        f"dlguide: error: {bad}: all 6400 voxels are NaN or infinite; expected an image of finite values"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_classify_predict_refuses_a_non_finite_image(class_run, runtime, tmp_path, kind):
    path = write_scan(tmp_path / "slice.nii.gz", kind, (40, 40, 1))
    with pytest.raises(UsageError, match=rf"^{path}: all 1600 voxels are NaN or infinite") as info:
        predict_run(class_run.run_dir, [str(path)], runtime=runtime)
    assert "\n" not in str(info.value)
    fine = write_scan(tmp_path / "fine.nii.gz", "finite", (40, 40, 1))
    _, [row] = predict_run(class_run.run_dir, [str(fine)], runtime=runtime)
    assert all(np.isfinite(c["probability"]) for c in row["top"])


def test_training_on_a_non_finite_volume_names_it(runtime, tmp_path):
    folder = write_msd_folder(tmp_path / "Task09_Spoilt", cases=3)
    spoilt = folder / "imagesTr" / "case1.nii.gz"
    write_nifti(volume("nan"), OBLIQUE, spoilt)
    with pytest.raises(UsageError, match=rf"{spoilt}: all 6400 voxels are NaN or infinite"):
        run_task("medical.segment", overrides=[*SEG_TINY, "dataset=msd", f"data_dir={folder}",
                                               "val_fraction=0.3", "test_fraction=0.3"],
                 out=tmp_path / "run", runtime=runtime, progress="none")
