"""medical.segment end to end on tiny volumes: one real training step, its metrics and
pictures, predict to NIfTI from NIfTI and DICOM with the input's grid kept, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file, spheres, write_dicom_series, write_msd_folder

from dlguide._errors import UsageError
from dlguide._runs import evaluate_run, predict_run, run_task
from dlguide_medical.msd import write_nifti

TINY = ["epochs=1", "limit_train_batches=1", "batch_size=2", "samples_per_volume=2", "patch_size=[16,16,16]",
        "channels=[8,16]", "sw_batch_size=8", "seed=0"]


@pytest.fixture(scope="module")
def synthetic_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("segment") / "run"
    return run_task("medical.segment", overrides=[*TINY, "synthetic_cases=5", "synthetic_size=32", "val_fraction=0.2",
                                                  "test_fraction=0.2"], out=out, runtime=runtime, progress="none")


def test_plugin_module_imports_no_torch():
    code = "import sys, dlguide_medical.plugin; print('torch' in sys.modules or 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plugin_hooks_and_targets(runtime, dlguide_check_hooks):
    import dlguide_medical.plugin

    assert dlguide_check_hooks(dlguide_medical.plugin) == ["dlguide_register"]
    entries = [e for e in runtime.registry.entries() if e.owner == "medical"]
    assert {"medical.segment", "medical.classify", "medical.unet", "medical.mni-brain"} <= {e.name for e in entries}
    for entry in entries:
        assert callable(entry.load()), entry.name


def test_training_step_writes_metrics_and_overlays(synthetic_run):
    metrics, run_dir = synthetic_run.metrics, synthetic_run.run_dir
    assert {"test/dice", "test/dice/object", "test/hd95", "val/dice", "test/loss"} <= metrics.keys()
    assert 0 <= metrics["test/dice"] <= 1 and metrics["test/dice"] == metrics["test/dice/object"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test/dice"] == pytest.approx(metrics["test/dice"])
    meta = json.loads((run_dir / "task.json").read_text())
    assert meta["classes"] == ["object"] and len(meta["cases"]["test"]) == 1
    # the generated set was written as a Decathlon folder and read back through it
    assert json.loads((Path(meta["folder"]) / "dataset.json").read_text())["numTraining"] == 5
    overlays = sorted((run_dir / "test_cases").glob("*.png"))
    assert [p.stem for p in overlays] == meta["cases"]["test"]


def test_evaluate_reproduces_the_test_dice(synthetic_run, runtime):
    again = evaluate_run(synthetic_run.run_dir, runtime=runtime)
    assert again["test/dice"] == pytest.approx(synthetic_run.metrics["test/dice"], abs=1e-6)


def test_msd_folder_trains_with_mixed_volume_shapes(runtime, tmp_path):
    folder = write_msd_folder(tmp_path / "Task02_Mixed", cases=4)
    image, label = spheres((24, 18, 20), 9)  # one case larger than the others along x and z
    write_nifti(image, OBLIQUE, folder / "imagesTr" / "case3.nii.gz")
    write_nifti(label, OBLIQUE, folder / "labelsTr" / "case3.nii.gz")
    result = run_task("medical.segment", overrides=[*TINY, "dataset=msd", f"data_dir={folder}", "val_fraction=0.25",
                                                    "test_fraction=0.5", "spacing=[1.2,1.2,2]"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    assert 0 <= result.metrics["test/dice/sphere"] <= 1


def test_predict_keeps_the_nifti_grid_and_affine(synthetic_run, runtime, tmp_path):
    image, _ = spheres((30, 26, 14), 3)
    source = tmp_path / "scan.nii.gz"
    write_nifti(image, OBLIQUE, source)
    lines = predict_run(synthetic_run.run_dir, [str(source)], out=tmp_path / "labels", runtime=runtime)
    output = tmp_path / "labels" / "scan_seg.nii.gz"
    assert lines == [f"{source} -> {output} (30x26x14; object {lines[0].split('object ')[1].split()[0]} voxels)"]
    written = nib.load(output)
    assert written.shape == (30, 26, 14)
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


def test_predict_accepts_a_dicom_file_and_a_series_folder(synthetic_run, runtime, tmp_path):
    series = write_dicom_series(tmp_path / "series", slices=3)
    lines = predict_run(synthetic_run.run_dir, [str(dicom_file("CT_small.dcm")), str(series)],
                        out=tmp_path / "out", runtime=runtime)
    assert len(lines) == 2
    from dlguide_medical.files import load_image

    read = load_image(series)
    written = nib.load(tmp_path / "out" / "series_seg.nii.gz")
    assert written.shape == tuple(read.shape) == (128, 128, 3)
    np.testing.assert_allclose(written.affine, np.asarray(read.affine), atol=1e-3)
    assert (tmp_path / "out" / "CT_small_seg.nii.gz").is_file()


def test_predict_checks_every_input_before_writing(synthetic_run, runtime, tmp_path):
    good = tmp_path / "good.nii.gz"
    write_nifti(spheres((20, 20, 20), 1)[0], OBLIQUE, good)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty DICOM folder"):
        predict_run(synthetic_run.run_dir, [str(good), str(tmp_path / "empty")], out=tmp_path / "out",
                    runtime=runtime)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_in_one_line(synthetic_run, tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    proc = subprocess.run([sys.executable, "-m", "dlguide", "predict", str(synthetic_run.run_dir), str(bad),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if str(bad) in line]
    assert len(errors) == 1 and "cannot be read as a nifti image" in errors[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset=msd"], "add --set data_dir=PATH"),
    (["patch_size=[18,18,18]", "channels=[8,16,32]"], "divisible by 4"),
    (["spacing=[1,1]"], "expected 3 numbers"),
])
def test_bad_settings_are_usage_errors(runtime, tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        run_task("medical.segment", overrides=overrides, out=tmp_path / "run", runtime=runtime, progress="none")
