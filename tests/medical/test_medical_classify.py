"""medical.classify: a tiny real training step on the synthetic PNG set, its metrics and
confusion matrix, predict on PNG, NIfTI and DICOM files (paths and uploaded bytes) after the
training folder is gone, a run under a guarded wrapper, and the errors of a bad folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file
from PIL import Image

import dlguide_medical.plugin
from dlguide import RawInput, UsageError, predict_run, run_task, stratified_split
from dlguide._cli import main as cli_main
from dlguide_medical.msd import write_nifti
from dlguide.testing import check_export

TINY = ["epochs=1", "limit_train_batches=1", "batch_size=8", "image_size=32", "seed=0"]
#: format_prediction of every classifier: the input, the best class and its probability, the runners-up
LINE = re.compile(r"^(?P<path>.+)  ->  (?P<label>\w+) \d\.\d\d  \((?P<others>\w+ \d\.\d\d, \w+ \d\.\d\d)\)$")


@pytest.fixture(scope="module")
def shapes_run(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "run"
    return run_task("medical.classify", overrides=[*TINY, "synthetic_per_class=10"], out=out, runtime=runtime,
                    progress="none")


def test_training_step_reports_accuracy_auc_and_draws(shapes_run):
    metrics, run_dir = shapes_run.metrics, shapes_run.run_dir
    assert 0 <= metrics["test/accuracy"] <= 1 and 0 <= metrics["test/auc"] <= 1
    assert (run_dir / "confusion_matrix.png").is_file()
    meta = json.loads((run_dir / "task.json").read_text())
    assert meta["classes"] == ["large", "medium", "small"] and meta["channels"] == 1
    assert meta["sizes"] == {"train": 18, "val": 6, "test": 6}  # stratified: 2 val and 2 test per class


def test_predict_prints_every_class_probability(shapes_run, runtime, medical_cache, tmp_path):
    png = next(medical_cache.rglob("synthetic2d-*/large/*.png"))  # written by the run, read back by predict
    nifti = tmp_path / "slice.nii.gz"
    write_nifti(np.random.default_rng(0).random((40, 40, 1)).astype(np.float32), OBLIQUE, nifti)
    inputs = [str(png), str(nifti), str(dicom_file("MR_small.dcm"))]
    task, rows = predict_run(shapes_run.run_dir, inputs, runtime=runtime)
    assert [row["input"] for row in rows] == inputs
    for row in rows:
        assert list(row) == ["input", "label", "probability", "top"]
        assert sorted(c["label"] for c in row["top"]) == ["large", "medium", "small"]
        probs = [c["probability"] for c in row["top"]]
        assert sum(probs) == pytest.approx(1, abs=1e-3) and probs == sorted(probs, reverse=True)
        assert LINE.match(task.format_prediction(row))["path"] == row["input"]


def test_predict_errors_name_the_input(shapes_run, runtime, tmp_path):
    with pytest.raises(UsageError, match=r"^scan\.png: cannot be read as a PNG image"):
        predict_run(shapes_run.run_dir, [RawInput(value=b"\x89PNG\r\n\x1a\n truncated", name="scan.png")],
                    runtime=runtime)
    volume = tmp_path / "volume.nii.gz"
    write_nifti(np.zeros((8, 8, 4), np.float32), OBLIQUE, volume)
    with pytest.raises(UsageError, match=r"volume\.nii\.gz: image of shape \(8, 8, 4\) is not 2D"):
        predict_run(shapes_run.run_dir, [str(volume)], runtime=runtime)
    with pytest.raises(UsageError, match="unsupported image file"):
        predict_run(shapes_run.run_dir, [RawInput(value=b"notes", name="notes.txt")], runtime=runtime)


def write_stripes(folder: Path, per_class: int = 6) -> list[tuple[Path, int]]:
    """Noisy horizontal and vertical stripes as PNG files, one class folder each; (file, label) pairs."""
    rng = np.random.default_rng(0)
    files = []
    for label, name in enumerate(("horizontal", "vertical")):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            stripes = np.tile(((np.arange(40) + rng.integers(0, 8)) // 4 % 2)[:, None] * 200.0, (1, 40))
            pixels = (stripes if label == 0 else stripes.T) + rng.normal(20, 20, (40, 40))
            path = folder / name / f"{name}{i}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            files.append((path, label))
    return files


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """The chance that a positive scores above a negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_folder_run_predicts_after_its_data_are_deleted(runtime, dlguide_runtime, tmp_path, capsys):
    """Predict reads an image exactly as the test pass did, from the run alone: on the held-out
    images (uploaded as bytes once the folder is deleted) it reproduces the test accuracy and AUC."""
    files = write_stripes(tmp_path / "stripes")
    result = run_task("medical.classify", overrides=["dataset=folder", f"data_dir={tmp_path / 'stripes'}",
                                                     "epochs=1", "batch_size=8", "image_size=32", "seed=0",
                                                     "val_fraction=0.2", "test_fraction=0.35"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    _, _, test = stratified_split([label for _, label in files], [0.2, 0.35], 0)  # the task's own split
    uploads = [RawInput(value=files[i][0].read_bytes(), name=files[i][0].name) for i in test]
    copy = tmp_path / "copy.png"
    shutil.copy(files[test[0]][0], copy)
    shutil.rmtree(tmp_path / "stripes")

    task, rows = predict_run(result.run_dir, [*uploads, str(copy)], runtime=runtime)
    assert [row["input"] for row in rows] == [u.name for u in uploads] + [str(copy)]
    assert rows[-1] == {**rows[0], "input": str(copy)}  # the same image as a local file
    labels = [files[i][1] for i in test]
    probs = [{c["label"]: c["probability"] for c in row["top"]} for row in rows[:-1]]
    predicted = [int(p["vertical"] > p["horizontal"]) for p in probs]
    assert np.mean(np.equal(predicted, labels)) == pytest.approx(result.metrics["test/accuracy"])
    assert roc_auc([p["vertical"] for p in probs], labels) == pytest.approx(result.metrics["test/auc"], abs=1e-6)

    dlguide_runtime(dlguide_medical.plugin)  # the command line's runtime: this plugin only
    assert cli_main(["predict", str(result.run_dir), str(copy)]) == 0
    assert capsys.readouterr().out.strip() == task.format_prediction(rows[-1])


def test_densenet_trains_through_the_wrapped_model(dlguide_runtime, dlguide_smoke_run):
    dlguide_runtime(dlguide_medical.plugin)
    result = dlguide_smoke_run("medical.classify", model="densenet121", image_size=32, batch_size=8,
                               synthetic_per_class=10, seed=0)
    assert 0 <= result.metrics["test/accuracy"] <= 1


def test_folder_errors_are_one_line(runtime, tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir()
    (tmp_path / "data" / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "data" / "a" / "README.txt").write_text("not an image, skipped")
    run = ["dataset=folder", f"data_dir={tmp_path / 'data'}", *TINY]
    with pytest.raises(UsageError, match=r"class folder .*b holds no images"):
        run_task("medical.classify", overrides=run, out=tmp_path / "r1", runtime=runtime, progress="none")
    (tmp_path / "data" / "b" / "y.dcm").write_bytes((dicom_file("MR_small.dcm")).read_bytes())
    with pytest.raises(UsageError) as err:
        run_task("medical.classify", overrides=[*run, "val_fraction=0", "test_fraction=0", "monitor=train/loss"],
                 out=tmp_path / "r2", runtime=runtime, progress="none")
    assert str(err.value).startswith(str(tmp_path / "data" / "a" / "x.png")) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match=r"data_dir not found: .*absent"):
        run_task("medical.classify", overrides=["dataset=folder", f"data_dir={tmp_path / 'absent'}", *TINY],
                 out=tmp_path / "r3", runtime=runtime, progress="none")


@pytest.mark.slow
def test_the_densenet_exports_and_verifies(shapes_run, runtime, tmp_path):
    manifest = check_export(shapes_run.run_dir, tmp_path / "bundle", runtime=runtime)
    assert manifest["inputs"][0]["shape"] == ["batch", 1, 32, 32]
