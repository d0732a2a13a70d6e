"""medical.classify: a tiny real training step on the synthetic PNG set, its metrics and
confusion matrix, predict on PNG, NIfTI and DICOM files, and the errors of a bad folder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import OBLIQUE, dicom_file

from dlguide._errors import UsageError
from dlguide._runs import predict_run, run_task
from dlguide_medical.msd import write_nifti

TINY = ["epochs=1", "limit_train_batches=1", "batch_size=8", "image_size=32", "seed=0"]
LINE = re.compile(r"^(?P<path>.+): (?P<probs>(\w+ \d\.\d{3}(, )?){3})$")


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
    assert meta["classes"] == ["large", "medium", "small"]
    assert meta["sizes"] == {"train": 18, "val": 6, "test": 6}  # stratified: 2 val and 2 test per class


def test_predict_prints_every_class_probability(shapes_run, runtime, medical_cache, tmp_path):
    png = next(medical_cache.rglob("synthetic2d-*/large/*.png"))  # written by the run, read back by predict
    nifti = tmp_path / "slice.nii.gz"
    write_nifti(np.random.default_rng(0).random((40, 40, 1)).astype(np.float32), OBLIQUE, nifti)
    inputs = [str(png), str(nifti), str(dicom_file("MR_small.dcm"))]
    lines = predict_run(shapes_run.run_dir, inputs, runtime=runtime)
    assert [LINE.match(line)["path"] for line in lines] == inputs
    for line in lines:
        probs = [float(p) for p in re.findall(r"\d\.\d{3}", line.split(": ", 1)[1])]
        assert sum(probs) == pytest.approx(1, abs=0.01) and probs == sorted(probs, reverse=True)


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
        run_task("medical.classify", overrides=[*run, "val_fraction=0", "test_fraction=0"], out=tmp_path / "r2",
                 runtime=runtime, progress="none")
    assert str(err.value).startswith(str(tmp_path / "data" / "a" / "x.png")) and "\n" not in str(err.value)
