"""dlguide cv: stratified folds, one ordinary run per fold, the summary, resuming, and the
corrected resampled t-test between two cross-validations."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import numpy as np
import pytest
from scipy.stats import t as student

from dlguide import kfold
from dlguide._cv import corrected_resampled_t, run_cv
from dlguide._compare import compare_runs
from dlguide.testing import run_cli

SETS = ["samples=256", "hidden=8", "seed=0"]


def test_folds_partition_the_samples_and_keep_each_class_share():
    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 5
    held = [kfold(labels, 4, k, seed=3)[1] for k in range(4)]
    assert sorted(i for part in held for i in part) == list(range(len(labels)))  # a partition
    assert max(map(len, held)) - min(map(len, held)) <= 1
    for part in held:
        counts = Counter(labels[i] for i in part)
        assert 7 <= counts["a"] <= 8 and 3 <= counts["b"] <= 3 and 1 <= counts["c"] <= 2
    kept, out = kfold(labels, 4, 1, seed=3)
    assert sorted(kept + out) == list(range(len(labels))) and not set(kept) & set(out)
    assert kfold(labels, 4, 1, seed=3) == (kept, out)  # a function of the seed
    assert kfold(labels, 4, 1, seed=4) != (kept, out)


def test_corrected_resampled_t_follows_nadeau_and_bengio():
    a = [0.81, 0.79, 0.84, 0.80, 0.83]
    b = [0.84, 0.80, 0.86, 0.84, 0.85]
    d = np.subtract(b, a)
    n, k = len(d), 5
    t_ref = d.mean() / math.sqrt((1 / n + 1 / (k - 1)) * d.var(ddof=1))  # n_test / n_train = 1 / (K - 1)
    stat, p, mean, (lo, hi) = corrected_resampled_t(a, b, k)
    assert stat == pytest.approx(t_ref) and p == pytest.approx(2 * student.sf(abs(t_ref), n - 1))
    half = student.ppf(0.975, n - 1) * math.sqrt((1 / n + 1 / (k - 1)) * d.var(ddof=1))
    assert mean == pytest.approx(d.mean()) and (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    plain = d.mean() / math.sqrt(d.var(ddof=1) / n)
    assert abs(stat) < abs(plain)  # the correction widens the interval: folds share training samples


@pytest.fixture(scope="module")
def two_cvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv")
    short = run_cv("example.sine", 3, out=folder / "short", overrides=[*SETS, "epochs=1", "lr=0.001"], progress="none")
    long = run_cv("example.sine", 3, out=folder / "long", overrides=[*SETS, "epochs=8"], progress="none")
    return folder, short, long


def test_each_fold_is_a_run_and_the_summary_is_written(two_cvs):
    folder, short, _ = two_cvs
    assert short["runs"] == ["r0_fold0", "r0_fold1", "r0_fold2"]
    saved = json.loads((folder / "short" / "cv.json").read_text())
    loss = saved["metrics"]["val/loss"]
    values = [json.loads((folder / "short" / r / "metrics.json").read_text())["val/loss"] for r in short["runs"]]
    assert loss["values"] == values and loss["mean"] == pytest.approx(np.mean(values))
    assert loss["std"] == pytest.approx(np.std(values, ddof=1))
    half = student.ppf(0.975, 2) * loss["std"] / math.sqrt(3)
    assert loss["ci95"] == pytest.approx([loss["mean"] - half, loss["mean"] + half])
    # the folds hold out different samples: their validation figures differ, the test split is shared
    assert len(set(values)) == 3
    configs = [(folder / "short" / r / "config.yaml").read_text() for r in short["runs"]]
    assert all(f"cv_fold: {k}" in c and "cv_folds: 3" in c for k, c in enumerate(configs))


def test_a_rerun_finishes_what_is_missing(two_cvs, tmp_path):
    folder, short, _ = two_cvs
    copy = tmp_path / "copy"
    shutil.copytree(folder / "short", copy)
    shutil.rmtree(copy / "r0_fold1")
    again = run_cv("example.sine", 3, out=copy, overrides=[*SETS, "epochs=1", "lr=0.001"], progress="none")
    assert again["metrics"]["val/loss"]["values"] == pytest.approx(short["metrics"]["val/loss"]["values"])


def test_two_cross_validations_are_compared_fold_by_fold(two_cvs):
    folder, _, _ = two_cvs
    [result] = compare_runs([folder / "short", folder / "long"])
    assert result.test == "corrected resampled t" and result.metric == "val/loss" and result.n == 3
    res = run_cli("compare", folder / "short", folder / "long", "--metric", "test/loss")
    assert res.returncode == 0, res.stderr
    assert "corrected resampled t p=" in res.stdout and "(95% CI " in res.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["example.sine", "--folds", "1"], "--folds must be >= 2, not 1"),
    (["example.sine", "--folds", "3", "--set", "cv_fold=1"], "cv sets cv_folds, cv_fold and cv_repeat itself"),
    (["vision.gan", "--folds", "3"], "task 'vision.gan' does not take folds"),
])
def test_bad_requests_are_one_line(tmp_path, args, says):
    res = run_cli("cv", *args, "--out", tmp_path / "cv")
    assert res.returncode == 2 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()
