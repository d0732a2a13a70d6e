"""medical.segment end to end on tiny volumes: one real training step, its metrics and
pictures, predict to NIfTI from NIfTI and DICOM with the input's grid kept (after the training
data are gone), runs under a guarded wrapper, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file, spheres, write_dicom_series, write_msd_folder

import dlguide_medical.plugin
from dlguide import RawInput, UsageError, evaluate_run, predict_run, run_task
from dlguide._cli import main as cli_main
from dlguide_medical.msd import write_nifti
from dlguide.testing import check_export, served

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


def test_plugin_registers_models_and_datasets_for_each_task(runtime, tmp_path):
    registry = runtime.registry
    assert registry.choices("model", "medical.segment") == ["segresnet", "unet"]
    assert registry.choices("model", "medical.classify") == ["densenet121"]
    assert registry.choices("dataset", "medical.segment") == ["mni-brain", "msd", "synthetic"]
    assert registry.choices("dataset", "medical.classify") == ["folder", "synthetic"]
    with pytest.raises(UsageError, match=r"'model': 'densenet121'; registered models: segresnet, unet"):
        run_task("medical.segment", overrides=["model=densenet121"], out=tmp_path / "run", runtime=runtime,
                 progress="none")


def write_scan(path: Path, shape: tuple[int, int, int] = (30, 26, 14), seed: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(spheres(shape, seed)[0], OBLIQUE, path)
    return path


def test_msd_folder_run_predicts_after_its_data_are_deleted(runtime, dlguide_runtime, tmp_path, capsys):
    """Volumes of different shapes are batched (padded by the task's collate), and predict needs
    nothing of the training data: the label volume lands on the input's own grid and affine."""
    folder = write_msd_folder(tmp_path / "Task02_Mixed", cases=4)
    image, label = spheres((24, 18, 20), 9)  # one case larger than the others along x and z
    write_nifti(image, OBLIQUE, folder / "imagesTr" / "case3.nii.gz")
    write_nifti(label, OBLIQUE, folder / "labelsTr" / "case3.nii.gz")
    result = run_task("medical.segment", overrides=[*TINY, "dataset=msd", f"data_dir={folder}", "val_fraction=0.25",
                                                    "test_fraction=0.5", "spacing=[1.2,1.2,2]"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    assert 0 <= result.metrics["test/dice/sphere"] <= 1
    shutil.rmtree(folder)

    source = write_scan(tmp_path / "scan.nii.gz")
    task, rows = predict_run(result.run_dir, [str(source)], out=tmp_path / "labels", runtime=runtime)
    output = tmp_path / "labels" / "scan_seg.nii.gz"
    assert rows == [{"input": str(source), "file": str(output), "shape": [30, 26, 14],
                     "voxels": {"sphere": rows[0]["voxels"]["sphere"]}}]
    written = nib.load(output)
    assert written.shape == (30, 26, 14)
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-4)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= {0, 1} and int((labels == 1).sum()) == rows[0]["voxels"]["sphere"]
    assert task.format_prediction(rows[0]) == (f"{source}  ->  {output}  (30x26x14; sphere "
                                               f"{rows[0]['voxels']['sphere']} voxels)")

    dlguide_runtime(dlguide_medical.plugin)  # the command line's runtime: this plugin only
    assert cli_main(["predict", str(result.run_dir), str(source)]) == 0
    default = result.run_dir / "predictions" / "scan_seg.nii.gz"
    assert capsys.readouterr().out.strip() == task.format_prediction({**rows[0], "file": str(default)})
    np.testing.assert_array_equal(np.asarray(nib.load(default).dataobj), labels)


def test_predict_reads_uploaded_bytes_under_their_file_name(synthetic_run, runtime, tmp_path):
    source = write_scan(tmp_path / "scan.nii.gz")
    upload = RawInput(value=source.read_bytes(), name="upload.nii.gz")
    _, rows = predict_run(synthetic_run.run_dir, [str(source), upload], out=tmp_path / "out", runtime=runtime)
    assert [r["input"] for r in rows] == [str(source), "upload.nii.gz"]
    from_path, from_bytes = (np.asarray(nib.load(tmp_path / "out" / n).dataobj)
                             for n in ("scan_seg.nii.gz", "upload_seg.nii.gz"))
    np.testing.assert_array_equal(from_bytes, from_path)
    with pytest.raises(UsageError, match=r"^bad\.nii\.gz: cannot be read as a NIfTI volume"):
        predict_run(synthetic_run.run_dir, [RawInput(value=b"\x1f\x8b not gzip", name="bad.nii.gz")],
                    out=tmp_path / "out", runtime=runtime)


def test_predict_accepts_a_dicom_file_and_a_series_folder(synthetic_run, runtime, tmp_path):
    series = write_dicom_series(tmp_path / "series", slices=3)
    _, rows = predict_run(synthetic_run.run_dir, [str(dicom_file("CT_small.dcm")), str(series)],
                          out=tmp_path / "out", runtime=runtime)
    assert len(rows) == 2
    from dlguide_medical.files import load_image

    read = load_image(series)
    written = nib.load(tmp_path / "out" / "series_seg.nii.gz")
    assert written.shape == tuple(read.shape) == (128, 128, 3)
    np.testing.assert_allclose(written.affine, np.asarray(read.affine), atol=1e-3)
    assert (tmp_path / "out" / "CT_small_seg.nii.gz").is_file()


def test_predict_checks_every_input_before_writing(synthetic_run, runtime, tmp_path):
    good = write_scan(tmp_path / "good.nii.gz", (20, 20, 20), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty DICOM folder"):
        predict_run(synthetic_run.run_dir, [str(good), str(tmp_path / "empty")], out=tmp_path / "out",
                    runtime=runtime)
    twin = write_scan(tmp_path / "other" / "good.nii.gz", (20, 20, 20), 2)
    with pytest.raises(UsageError) as err:
        predict_run(synthetic_run.run_dir, [str(good), str(twin)], out=tmp_path / "out", runtime=runtime)
    assert str(err.value) == (f"inputs {good} and {twin} would both be written to good_seg.nii.gz; predict them "
                              "in separate calls or into different output folders")
    assert not (tmp_path / "out").exists()
    # a refused call leaves nothing claimed: the same input predicts alone afterwards
    _, rows = predict_run(synthetic_run.run_dir, [str(good)], out=tmp_path / "out", runtime=runtime)
    assert rows[0]["file"] == str(tmp_path / "out" / "good_seg.nii.gz")


def test_cli_reports_bad_input_in_one_line(synthetic_run, dlguide_runtime, tmp_path, capsys):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    dlguide_runtime(dlguide_medical.plugin)  # the command line's runtime: this plugin only
    code = cli_main(["predict", str(synthetic_run.run_dir), str(bad), "--out", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 2
    errors = [line for line in stderr.splitlines() if str(bad) in line]
    assert len(errors) == 1 and "cannot be read as a NIfTI volume" in errors[0]
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["unet", "segresnet"])
def test_each_model_trains_through_the_wrapped_model(dlguide_runtime, dlguide_smoke_run, model):
    """Every forward pass (training patches, sliding windows) goes through ``task.model``."""
    dlguide_runtime(dlguide_medical.plugin)
    tiny = dict(item.split("=", 1) for item in TINY)
    result = dlguide_smoke_run("medical.segment", **tiny, model=model, synthetic_cases=5, synthetic_size=32)
    assert 0 <= result.metrics["test/dice"] <= 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset=msd"], "add --set data_dir=PATH"),
    (["patch_size=[18,18,18]", "channels=[8,16,32]"], "divisible by 4"),
    (["spacing=[1,1]"], "expected 3 numbers"),
    (["data_dir=/"], "data_dir is not read by dataset 'synthetic': add --set dataset=msd"),
])
def test_bad_settings_are_usage_errors(runtime, tmp_path, overrides, message):
    with pytest.raises(UsageError, match=message):
        run_task("medical.segment", overrides=overrides, out=tmp_path / "run", runtime=runtime, progress="none")


def test_the_network_exports_inside_its_sliding_window(synthetic_run, runtime, tmp_path):
    manifest = check_export(synthetic_run.run_dir, tmp_path / "bundle", runtime=runtime)
    assert manifest["inputs"][0]["shape"] == ["batch", 1, 16, 16, 16]  # one batch of patches
    assert manifest["statistics"]["prediction"]["kind"] == "numeric"  # the labelled share of voxels


def test_a_served_volume_comes_back_as_a_label_file(synthetic_run, tmp_path):
    """An uploaded NIfTI is segmented by the server; the label volume returns base64-encoded in the
    JSON, and a file that is not a volume is a 422 naming it while the server goes on."""
    import base64
    import gzip

    image = write_scan(tmp_path / "scan.nii.gz")
    with served(synthetic_run.run_dir, folder=tmp_path / "serve") as client:
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        answer = client.post("/predict", files={"file": (image.name, image.read_bytes())})
        assert answer.status_code == 200, answer.text
        [row] = answer.json()["predictions"]
        assert row["input"] == "scan.nii.gz" and len(row["shape"]) == 3
        written = row["file"]
        assert written["filename"].endswith("_seg.nii.gz") and written["media_type"] == "application/gzip"
        assert gzip.decompress(base64.b64decode(written["b64"]))[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")
        bad = client.post("/predict", files={"file": ("notes.nii.gz", b"not a volume")})
        assert bad.status_code == 422 and "notes.nii.gz" in bad.json()["error"]
        assert client.post("/predict", files={"file": (image.name, image.read_bytes())}).status_code == 200
