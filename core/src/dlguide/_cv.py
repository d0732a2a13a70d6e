"""``dlguide cv``: K-fold cross-validation over ordinary runs.

    dlguide cv vision.classify --folds 5 [--repeats 2] --out cv/digits --set epochs=5

The task's training and validation samples are pooled and cut into K stratified folds (by
class where the task has classes; by user for recommenders); run k of repeat r holds fold k out
for validation, with ``seed + r`` drawing the folds (``cv_repeat=r``). Everything else of the
run, its initialisation and the task's test split, comes from ``seed`` and is the same for every
run, so every fold is tested on the same samples. Each fold is an ordinary run directory (``OUT/r0_fold1``), so a fold is
resumed, evaluated, exported or compared like any run; rerunning the command finishes what is
missing. Then every metric's mean, sample standard deviation and 95% interval (Student's t
over the K x R values) go into a table and ``cv.json``.

Tasks opt in with ``Task.supports_folds`` and take their fold in ``build_data`` from
``dlguide.cv_fold(config, labels)``. Two cv folders with the same folds (task, K, R, seed) are
compared by ``dlguide compare`` with the corrected resampled t-test of Nadeau and Bengio (2003).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dlguide._errors import UsageError

CV_FILE = "cv.json"


def _summary(values: Sequence[float]) -> dict[str, Any]:
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "values": list(values)}


def run_cv(task: str, folds: int, *, repeats: int = 1, out: str | Path | None = None, overrides: Iterable[str] = (),
           config_file: str | Path | None = None, runtime: Any = None, progress: str = "auto") -> dict[str, Any]:
    """Train every fold of every repeat (finishing what an earlier call left), write ``cv.json``."""
    from dlguide._plugins import get_runtime
    from dlguide._rundir import RunDir
    from dlguide._runs import build_task, resume_run, run_task

    rt = runtime or get_runtime()
    if folds < 2:
        raise UsageError(f"--folds must be >= 2, not {folds}")
    if repeats < 1:
        raise UsageError(f"--repeats must be >= 1, not {repeats}")
    sets = list(overrides)
    if any(s.split("=", 1)[0].strip() in ("cv_folds", "cv_fold", "cv_repeat") for s in sets):
        raise UsageError("cv sets cv_folds, cv_fold and cv_repeat itself; give --folds and --repeats instead")
    base = build_task(task, config_file=config_file, overrides=sets, runtime=rt)  # bad settings: before any fold
    if not base.supports_folds:
        raise UsageError(f"task {task!r} does not take folds (Task.supports_folds); its plugin splits the data "
                         "its own way")
    seed = int(base.config.seed)
    folder = Path(out) if out is not None else Path("runs") / "cv" / task
    runs: list[Path] = []
    for r in range(repeats):
        for k in range(folds):
            run = folder / f"r{r}_fold{k}"
            fold_sets = [*sets, f"cv_folds={folds}", f"cv_fold={k}", f"cv_repeat={r}"]
            if (run / "metrics.json").is_file():
                pass  # finished by an earlier call
            elif RunDir(run).config_path.is_file():
                if (run / "checkpoints" / "last.ckpt").is_file():
                    resume_run(run, runtime=rt, progress=progress)
                else:
                    shutil.rmtree(run)
                    run_task(task, config_file=config_file, overrides=fold_sets, out=run, runtime=rt,
                             progress=progress)
            else:
                run_task(task, config_file=config_file, overrides=fold_sets, out=run, runtime=rt, progress=progress)
            runs.append(run)
    rows = [json.loads((run / "metrics.json").read_text(encoding="utf-8")) for run in runs]
    names = [k for k, v in rows[0].items() if "/" in k and isinstance(v, (int, float))
             and all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) for row in rows)]
    result = {"task": task, "folds": folds, "repeats": repeats, "seed": seed, "overrides": sets,
              "runs": [run.name for run in runs], "metrics": {name: _summary([row[name] for row in rows])
                                                             for name in names}}
    from dlguide._rundir import write_text_atomic

    write_text_atomic(folder / CV_FILE, json.dumps(result, indent=2) + "\n")
    return result


def format_cv(result: dict[str, Any]) -> str:
    """The table: one row per metric with its mean, standard deviation and 95% interval."""
    rows = [(name, f"{m['mean']:.4f}", f"{m['std']:.4f}", f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]")
            for name, m in result["metrics"].items() if name.count("/") == 1]
    header = ("metric", "mean", "std", "95% interval")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)] if rows else [len(h) for h in header]
    lines = [f"{result['task']}: {result['folds']} folds x {result['repeats']} repeat(s)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in (header, *rows)]
    return "\n".join(lines)


def read_cv(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CV_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0][:120]}") from None


def is_cv(folder: str | Path) -> bool:
    return (Path(folder) / CV_FILE).is_file()


def corrected_resampled_t(a: Sequence[float], b: Sequence[float], folds: int
                          ) -> tuple[float, float, float, tuple[float, float]]:
    """Nadeau and Bengio's corrected resampled t-test of paired per-fold values: the variance of
    the differences is inflated by ``n_test / n_train`` (``1 / (K - 1)`` for K folds), because
    the folds share training samples. Returns (t, two-sided p, mean difference b - a, its 95%
    interval) with ``len - 1`` degrees of freedom."""
    from scipy.stats import t as student

    diff = [y - x for x, y in zip(a, b)]
    n = len(diff)
    if n < 2:
        raise UsageError("the corrected resampled t-test needs at least two folds")
    mean = sum(diff) / n
    var = sum((d - mean) ** 2 for d in diff) / (n - 1)
    scale = math.sqrt((1 / n + 1 / (folds - 1)) * var)
    half = float(student.ppf(0.975, n - 1)) * scale
    if scale == 0:
        stat, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        stat = mean / scale
        p = float(2 * student.sf(abs(stat), n - 1))
    return stat, p, mean, (mean - half, mean + half)
