"""vision tasks under two processes (``--nproc-per-node 2``, gloo): the classifier trains and
evaluates as one process; the GAN's players average their gradients at each step, and its
scoring classifier, trained inside the run, is written once."""

from __future__ import annotations

import json

import pytest

from dlguide.testing import run_cli


@pytest.mark.slow
def test_two_processes_classify_digits_as_one(dlguide_distributed_run):
    # the cnn has no batch norm; without dropout both runs draw the same random numbers. Each
    # epoch ends with a short global batch split unevenly (1,295 images in batches of 64: the
    # last holds 15, 8 and 7 per process), whose shares' losses are weighted by their sizes
    dlguide_distributed_run("vision.classify", "dataset=digits", "epochs=2", "batch_size=64", "dropout=0")


@pytest.mark.slow
def test_two_processes_train_a_gan_and_its_scoring_classifier_once(tmp_path):
    out = tmp_path / "gan"
    res = run_cli("run", "vision.gan", "--nproc-per-node", "2", "--out", out, "--set", "epochs=2",
                  "limit_train_batches=3", "batch_size=16", "classifier_epochs=1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stderr.count("training the scoring classifier") == 1
    rows = (out / "classifier" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1]  # the nested run, written by one process
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["gan/frechet_distance"] and 0 <= metrics["test/confidence"] <= 1
    # the finished run is an ordinary one: one process predicts from it
    pred = run_cli("predict", out, "7", "--json")
    assert pred.returncode == 0, pred.stderr
