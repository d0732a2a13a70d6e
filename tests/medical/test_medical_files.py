"""Reading medical files: the Decathlon layout, NIfTI round trips, DICOM, and the one-line
errors of bad data, each of which leaves the data set's files as they were."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file, write_dicom_series

from dlguide import UsageError
from dlguide_medical.files import load_image
from dlguide_medical.msd import read_msd, split_cases, write_nifti


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_msd_folder_is_read_with_labels_and_cases(msd_folder):
    data = read_msd(msd_folder)
    assert data.classes == ["sphere"] and data.channels == 1 and data.name == "tiny"
    assert [c["name"] for c in data.training] == ["case0", "case1", "case2"]
    assert all(Path(c["image"]).is_file() and Path(c["label"]).is_file() for c in data.training)
    index = json.loads((msd_folder / "dataset.json").read_text())
    assert index["labels"] == {"0": "background", "1": "sphere"} and index["numTraining"] == 3


def test_split_is_seeded_and_disjoint(msd_folder):
    cases = read_msd(msd_folder).training
    train, val, test = split_cases(cases, 0.3, 0.3, seed=1, has_validation=False)
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    assert {c["name"] for c in train + val + test} == {"case0", "case1", "case2"}
    assert split_cases(cases, 0.3, 0.3, seed=1, has_validation=False) == (train, val, test)
    with pytest.raises(UsageError, match="cannot be split"):
        split_cases(cases[:2], 0.3, 0.3, seed=1, has_validation=False)


def test_nifti_round_trip_keeps_affine_and_voxels(tmp_path):
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    path = tmp_path / "vol.nii.gz"
    write_nifti(volume, OBLIQUE, path)
    on_disk = nib.load(path)
    np.testing.assert_allclose(on_disk.affine, OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(on_disk.dataobj), volume)
    loaded = load_image(path)
    np.testing.assert_allclose(np.asarray(loaded.affine), OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(loaded.numpy(), volume)


def test_dicom_file_and_series_folder_are_read(tmp_path):
    single = load_image(dicom_file("CT_small.dcm"))
    assert tuple(single.shape[:2]) == (128, 128)
    series = load_image(write_dicom_series(tmp_path / "series", slices=3))
    assert tuple(series.shape) == (128, 128, 3)
    assert float(np.asarray(series.affine)[2, 2]) == pytest.approx(5.0)  # slice spacing from the positions


def test_shape_mismatch_names_both_files_and_shapes(msd_folder):
    label = msd_folder / "labelsTr" / "case1.nii.gz"
    write_nifti(np.zeros((20, 20, 15), np.uint8), OBLIQUE, label)
    before = snapshot(msd_folder)
    with pytest.raises(UsageError) as err:
        read_msd(msd_folder)
    message = str(err.value)
    assert "imagesTr/case1.nii.gz" in message and "20x20x16" in message
    assert "labelsTr/case1.nii.gz" in message and "20x20x15" in message and "\n" not in message
    assert snapshot(msd_folder) == before


def test_missing_listed_file_is_named(msd_folder):
    (msd_folder / "imagesTr" / "case2.nii.gz").unlink()
    before = snapshot(msd_folder)
    with pytest.raises(UsageError, match=r"lists .*imagesTr/case2\.nii\.gz, which does not exist"):
        read_msd(msd_folder)
    assert snapshot(msd_folder) == before


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_non_nifti_and_truncated_files_are_one_line_errors(msd_folder, damage):
    image = msd_folder / "imagesTr" / "case0.nii.gz"
    if damage == "text":
        image.write_text("patient notes, not an image\n")
    else:
        raw = gzip.decompress(image.read_bytes())
        image.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    before = snapshot(msd_folder)
    with pytest.raises(UsageError) as err:
        if damage == "text":
            read_msd(msd_folder)  # the header check already fails
        else:
            load_image(image)  # the header survives; reading the voxels fails
    assert str(err.value).startswith(str(image)) and "\n" not in str(err.value)
    assert snapshot(msd_folder) == before


def test_empty_dicom_folder_and_unknown_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty DICOM folder"):
        load_image(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="unsupported image file"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(UsageError, match="image not found"):
        load_image(tmp_path / "absent.nii.gz")


def test_malformed_dataset_json(msd_folder):
    (msd_folder / "dataset.json").write_text('{"training": [], "labels": {"0": "background"}}')
    with pytest.raises(UsageError, match="non-empty 'training' list"):
        read_msd(msd_folder)
    (msd_folder / "dataset.json").unlink()
    with pytest.raises(UsageError, match="dataset.json is missing"):
        read_msd(msd_folder)


def test_mni_brain_is_written_as_slabs_with_tissue_labels():
    from dlguide_medical.sources import mni_brain_msd

    data = read_msd(mni_brain_msd(slabs=3))
    assert data.classes == ["grey_matter", "white_matter"] and len(data.training) == 3
    images = [nib.load(c["image"]) for c in data.training]
    origins = [img.affine[1, 3] for img in images]
    widths = [img.shape[1] for img in images]
    # consecutive slabs continue each other from back to front in scanner space (1 mm voxels)
    assert origins[1] == pytest.approx(origins[0] + widths[0]) and origins[2] == pytest.approx(origins[1] + widths[1])
    labels = np.asarray(nib.load(data.training[1]["label"]).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2} and (labels == 1).mean() > 0.1
