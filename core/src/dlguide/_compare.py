"""``dlguide compare``: are two runs really different, sample by sample on the same test split?

Each run's test pass saved per-sample outcomes (``outcomes.safetensors``: a correct flag, a
per-sample loss, a user's NDCG, a case's Dice) with a digest of every test sample. Runs over
different test data are refused. For each pair of runs:

- a **correct** flag (classification): McNemar's exact test, a two-sided binomial test on the
  discordant samples (those one run gets right and the other wrong);
- any other outcome (losses, per-user or per-case figures): the Wilcoxon signed-rank test of the
  paired differences (zero differences dropped, exact for small samples);
- the effect: the mean paired difference (B - A) with a paired bootstrap percentile interval;
- with more than two runs, every pair, and Holm's step-down correction of the p-values.

The statistics come from scipy; bootstrap resampling from numpy.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlguide._errors import UsageError
from dlguide._outcomes import DIGESTS, read_outcomes

BOOTSTRAP = 10_000


@dataclasses.dataclass
class Comparison:
    a: str
    b: str
    metric: str
    test: str
    n: int
    mean_a: float
    mean_b: float
    difference: float  # mean of b - a
    interval: tuple[float, float]
    p: float
    p_adjusted: float
    higher_is_better: bool
    detail: dict[str, Any]

    def verdict(self, alpha: float) -> str:
        if self.p_adjusted >= alpha:
            return f"no significant difference at alpha {alpha:g}"
        better = self.b if (self.difference > 0) == self.higher_is_better else self.a
        return f"{better} is better at alpha {alpha:g}"

    def line(self, alpha: float, adjusted: bool) -> str:
        lo, hi = self.interval
        p = f"p={self.p:.4f}" + (f" (Holm-adjusted p={self.p_adjusted:.4f})" if adjusted else "")
        return (f"{self.b} vs {self.a}: {self.metric} {self.mean_b:.4f} vs {self.mean_a:.4f}, difference "
                f"{self.difference:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}), {self.test} {p}, n={self.n}: "
                f"{self.verdict(alpha)}")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact test: (two-sided p, samples only A got right, samples only B got right)."""
    from scipy.stats import binomtest

    a, b = correct_a.astype(bool), correct_b.astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0, only_a, only_b
    return float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue), only_a, only_b


def wilcoxon_signed_rank(values_a: np.ndarray, values_b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (zeros dropped)."""
    from scipy.stats import wilcoxon

    diff = values_b.astype(np.float64) - values_a.astype(np.float64)
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_bootstrap(values_a: np.ndarray, values_b: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean paired difference (b - a), resampling samples with replacement."""
    diff = values_b.astype(np.float64) - values_a.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # in blocks: 10,000 x n indices at once can be large
        size = min(1000, resamples - start)
        means[start:start + size] = diff[rng.integers(0, len(diff), (size, len(diff)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the given order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _default_metric(columns: dict[str, Any]) -> str:
    names = [k for k in columns if k != DIGESTS]
    if "correct" in names:
        return "correct"
    return next((n for n in names if "loss" not in n), names[0])


def compare_runs(runs: Sequence[str | Path], *, metric: str | None = None, seed: int = 0,
                 resamples: int = BOOTSTRAP) -> list[Comparison]:
    """Every pair of ``runs`` compared on ``metric`` (default: ``correct`` where recorded, else
    the first figure that is not a loss); Holm-corrected when there are more than two runs."""
    if len(runs) < 2:
        raise UsageError("compare needs at least two runs")
    from dlguide._cv import is_cv

    kinds = {is_cv(run) for run in runs}
    if kinds == {True}:
        return compare_cv(runs, metric=metric)
    if len(kinds) > 1:
        raise UsageError("compare takes runs, or cv folders (dlguide cv), not both")
    loaded = [(str(run), *read_outcomes(Path(run))) for run in runs]
    first_name, first_meta, first_cols = loaded[0]
    for name, meta, _ in loaded[1:]:
        if meta["task"] != first_meta["task"]:
            raise UsageError(f"{name} is a {meta['task']} run and {first_name} a {first_meta['task']} run; "
                             "compare runs of one task")
        if meta["data_digest"] != first_meta["data_digest"]:
            raise UsageError(f"{name} and {first_name} were tested on different data ({meta['samples']} and "
                             f"{first_meta['samples']} samples, digests {meta['data_digest'][:12]} and "
                             f"{first_meta['data_digest'][:12]}); compare runs over the same test split")
    metric = metric or _default_metric(first_cols)
    for name, _, cols in loaded:
        if metric not in cols or metric == DIGESTS:
            known = ", ".join(k for k in cols if k != DIGESTS)
            raise UsageError(f"{name} has no per-sample {metric!r}; it recorded: {known}")
    results = []
    for (name_a, _, cols_a), (name_b, _, cols_b) in itertools.combinations(loaded, 2):
        a, b = cols_a[metric].numpy(), cols_b[metric].numpy()
        keep = np.isfinite(a) & np.isfinite(b)  # a class absent from a case has no Dice
        a, b = a[keep], b[keep]
        if metric == "correct":
            p, only_a, only_b = mcnemar_exact(a, b)
            test, detail = "McNemar exact", {"only_a_correct": only_a, "only_b_correct": only_b}
        else:
            p, test, detail = wilcoxon_signed_rank(a, b), "Wilcoxon signed-rank", {}
        interval = paired_bootstrap(a, b, resamples=resamples, seed=seed)
        results.append(Comparison(name_a, name_b, metric, test, int(len(a)), float(a.mean()), float(b.mean()),
                                  float((b - a).mean()), interval, p, p, "loss" not in metric, detail))
    for result, adjusted in zip(results, holm([r.p for r in results])):
        result.p_adjusted = adjusted
    return results


def compare_cv(folders: Sequence[str | Path], *, metric: str | None = None) -> list[Comparison]:
    """Cross-validations with the same folds compared fold by fold: Nadeau and Bengio's corrected
    resampled t-test, its t interval of the mean difference, Holm across pairs."""
    from dlguide._cv import corrected_resampled_t, read_cv
    from dlguide._rundir import RunDir

    loaded = [(str(f), read_cv(f)) for f in folders]
    first_name, first = loaded[0]
    for name, cv in loaded[1:]:
        same = all(cv.get(k) == first.get(k) for k in ("task", "folds", "repeats", "seed"))
        if not same:
            raise UsageError(f"{name} and {first_name} are not cross-validations over the same folds (task, "
                             "folds, repeats and seed must match)")
    if metric is None:
        _, config = RunDir(Path(first_name) / first["runs"][0]).read_config()
        metric = str(config.get("monitor", "val/loss"))
    for name, cv in loaded:
        if metric not in cv["metrics"]:
            raise UsageError(f"{name} has no {metric!r}; it measured: {', '.join(cv['metrics'])}")
    results = []
    for (name_a, cv_a), (name_b, cv_b) in itertools.combinations(loaded, 2):
        a, b = cv_a["metrics"][metric]["values"], cv_b["metrics"][metric]["values"]
        stat, p, mean, interval = corrected_resampled_t(a, b, int(first["folds"]))
        n = len(a)
        results.append(Comparison(name_a, name_b, metric, "corrected resampled t", n, sum(a) / n, sum(b) / n, mean,
                                  interval, p, p, "loss" not in metric, {"t": stat}))
    for result, adjusted in zip(results, holm([r.p for r in results])):
        result.p_adjusted = adjusted
    return results
