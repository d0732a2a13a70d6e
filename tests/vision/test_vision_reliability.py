"""vision runs that are stopped or refused: a GAN stopped while its scoring classifier trains
resumes with one 'dlguide resume RUN'; a run refused before its first epoch leaves nothing; a
prediction never writes through a link planted at its output name."""

from __future__ import annotations

import json

import pytest

from dlguide import predict_run, run_task
from dlguide.testing import run_cli


@pytest.mark.slow
def test_a_gan_stopped_while_its_classifier_trains_resumes_as_one_run(tmp_path):
    (tmp_path / "stopper.py").write_text(
        "import os, signal\nfrom dlguide import hookimpl\n\n@hookimpl\ndef dlguide_epoch_end(trainer, epoch, metrics):\n"
        "    if trainer.task.name == 'vision.classify' and epoch == 1:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n")
    out = tmp_path / "gan"
    sets = ["epochs=1", "limit_train_batches=2", "batch_size=16", "classifier_epochs=2", "quality_samples=50"]
    res = run_cli("run", "vision.gan", "--out", out, "--quiet", "--set", *sets,
                  env={"PYTHONPATH": str(tmp_path), "DLGUIDE_PLUGINS": "stopper"})
    assert res.returncode == 128 + 15
    assert res.stderr.strip().splitlines()[-1] == ("dlguide: error: SIGTERM received at epoch 2, batch 0 while the "
                                                   f"scoring classifier trained; continue with: dlguide resume {out}")
    resumed = run_cli("resume", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(r)["epoch"] for r in (out / "classifier" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "metrics.json").is_file() and (out / "classifier" / "model.safetensors").is_file()


def test_a_run_refused_before_its_first_epoch_leaves_nothing(tmp_path, runtime):
    out = tmp_path / "run"
    res = run_cli("run", "vision.classify", "--out", out, "--set", "dataset=imagefolder",
                  f"data_dir={tmp_path / 'absent'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_prediction_does_not_write_through_a_planted_link(tmp_path, runtime):
    run = tmp_path / "gan"
    run_task("vision.gan", overrides=["epochs=1", "limit_train_batches=1", "classifier_epochs=1", "quality_samples=20"],
             out=run, runtime=runtime, progress="none")
    target = tmp_path / "precious.png"
    target.write_bytes(b"keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sample_seed3.png").symlink_to(target)
    _, rows = predict_run(run, ["3"], out=tmp_path / "out", runtime=runtime)
    assert target.read_bytes() == b"keep me"
    written = tmp_path / "out" / "sample_seed3.png"
    assert rows[0]["file"] == str(written) and not written.is_symlink() and written.stat().st_size > 0


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "images.zip").write_bytes(b"PK")
    res = run_cli("run", "vision.classify", "--out", tmp_path / "run", "--set", "dataset=imagefolder",
                  f"data_dir={tmp_path / 'images.zip'}")
    assert (res.returncode, res.stderr.strip()) == (2, f"dlguide: error: data_dir {tmp_path / 'images.zip'} is a file; "
                                                       "expected the folder that holds the data set")
    assert not (tmp_path / "run").exists()
