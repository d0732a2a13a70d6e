"""dlguide compare: per-sample outcomes of the test pass, and the statistics over them, checked
against an independent implementation (mlxtend's McNemar; an exact enumeration of the
signed-rank distribution) and by simulation of equal models."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import rankdata

from dlguide import run_task
from dlguide._compare import compare_runs, holm, mcnemar_exact, paired_bootstrap, wilcoxon_signed_rank
from dlguide._outcomes import read_outcomes
from dlguide.testing import run_cli

mlxtend = pytest.importorskip("mlxtend.evaluate", reason="mlxtend is the reference implementation (test env only)")


@pytest.mark.parametrize(("only_a", "only_b", "both", "neither"), [(10, 25, 50, 15), (3, 3, 90, 4), (0, 7, 40, 3),
                                                                     (41, 30, 200, 29), (1, 0, 5, 5)])
def test_mcnemar_matches_mlxtend(only_a, only_b, both, neither):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither)
    table = np.array([[both, only_a], [only_b, neither]])
    _, reference = mlxtend.mcnemar(table, exact=True)
    p, got_a, got_b = mcnemar_exact(a, b)
    assert (got_a, got_b) == (only_a, only_b)
    assert p == pytest.approx(reference, rel=1e-12)


def exact_signed_rank_p(diff):
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns."""
    diff = diff[diff != 0]
    ranks = rankdata(np.abs(diff))
    observed = ranks[diff > 0].sum()
    mean = ranks.sum() / 2
    stats = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(diff))])
    return float(np.mean(np.abs(stats - mean) >= abs(observed - mean) - 1e-9))


@pytest.mark.parametrize("seed", range(4))
def test_wilcoxon_matches_an_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=11)
    b = a + rng.normal(0.4, 1.0, size=11)
    assert wilcoxon_signed_rank(a, b) == pytest.approx(exact_signed_rank_p(b - a), abs=1e-12)


def test_holm_matches_its_definition():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.6]) == [0.8, 0.8]  # monotone, capped at 1


def test_bootstrap_interval_covers_the_mean_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    b = a + 0.3 + rng.normal(0, 0.5, size=400)
    lo, hi = paired_bootstrap(a, b, resamples=2000)
    assert lo < (b - a).mean() < hi and lo > 0.2 and hi < 0.4


def test_equal_models_are_called_different_about_alpha_of_the_time():
    """500 comparisons of two equally good models on fresh test sets: each test's false-positive
    rate at alpha 0.05 stays within 0.03-0.07."""
    rng = np.random.default_rng(2026)
    mcnemar_hits = wilcoxon_hits = 0
    for _ in range(500):
        a, b = rng.random(400) < 0.8, rng.random(400) < 0.8
        mcnemar_hits += mcnemar_exact(a, b)[0] < 0.05
        la, lb = rng.exponential(size=60), rng.exponential(size=60)
        wilcoxon_hits += wilcoxon_signed_rank(la, lb) < 0.05
    assert 0.03 <= mcnemar_hits / 500 <= 0.07
    assert 0.03 <= wilcoxon_hits / 500 <= 0.07


@pytest.fixture(scope="module")
def sine_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    sets = ["samples=512", "hidden=8", "seed=0"]
    runs = {}
    for name, extra in (("short", ["epochs=1", "lr=0.001"]), ("long", ["epochs=8"])):  # barely trained, trained
        run_task("example.sine", overrides=[*sets, *extra], out=folder / name, progress="none")
        runs[name] = folder / name
    run_task("example.sine", overrides=["samples=256", "hidden=8", "seed=0", "epochs=1"], out=folder / "other",
             progress="none")
    runs["other"] = folder / "other"
    return runs


def test_the_test_pass_saves_per_sample_outcomes(sine_runs):
    meta, columns = read_outcomes(sine_runs["long"])
    assert meta["task"] == "example.sine" and meta["samples"] == "64"
    assert set(columns) == {"loss", "sample_digest"} and len(columns["loss"]) == 64
    mean = json.loads((sine_runs["long"] / "metrics.json").read_text())["test/loss"]
    assert float(columns["loss"].mean()) == pytest.approx(mean, rel=1e-5)  # the test loss, per sample


def test_compare_gives_a_verdict_line(sine_runs):
    res = run_cli("compare", sine_runs["short"], sine_runs["long"], "--metric", "loss")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    assert line.startswith(f"{sine_runs['long']} vs {sine_runs['short']}: loss ")
    assert "Wilcoxon signed-rank p=0." in line and "95% CI" in line and line.endswith("is better at alpha 0.05")
    [result] = compare_runs([sine_runs["short"], sine_runs["long"]])
    assert result.difference < 0 and result.interval[1] < 0  # the longer run's losses are lower
    assert f"p={result.p:.4f}" in line


def test_three_runs_are_holm_corrected(sine_runs):
    results = compare_runs([sine_runs["short"], sine_runs["long"], sine_runs["short"]])
    assert len(results) == 3
    assert [r.p_adjusted for r in results] == pytest.approx(holm([r.p for r in results]))
    same = next(r for r in results if r.a == r.b)
    assert same.p == 1.0 and same.verdict(0.05) == "no significant difference at alpha 0.05"


def test_runs_over_different_data_are_refused(sine_runs, tmp_path):
    res = run_cli("compare", sine_runs["short"], sine_runs["other"])
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"dlguide: error: {sine_runs['other']} and {sine_runs['short']} were "
                                         "tested on different data (32 and 64 samples")
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_cli("compare", sine_runs["short"], tmp_path)
    assert res.returncode == 2 and "has no per-sample test outcomes" in res.stderr
    res = run_cli("compare", sine_runs["short"], sine_runs["long"], "--metric", "dice")
    assert res.returncode == 2 and "has no per-sample 'dice'; it recorded: loss" in res.stderr
