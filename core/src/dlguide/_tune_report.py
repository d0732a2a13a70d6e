"""What ``dlguide tune`` leaves of a study: the table of its trials, ``study.json``, ``best.yaml``
(the best run's resolved config) and the optimisation-history and importance pictures."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlguide._tune_space import as_text

if TYPE_CHECKING:
    from dlguide._tune import TuneSettings


@dataclasses.dataclass
class TuneResult:
    """A study as it stands after the command: its trials and what was written."""

    study: str
    out: Path
    monitor: str
    direction: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: list[Path]


def trial_row(trial: Any) -> dict[str, Any]:
    """One trial as the table and study.json show it: a value for a complete trial only (Optuna
    gives a pruned one its last report, which its curve holds)."""
    curve = sorted(trial.intermediate_values.items())
    value = _finite(trial.value) if trial.state.name == "COMPLETE" else None
    return {"number": trial.number, "state": trial.state.name, "value": value,
            "epochs": curve[-1][0] if curve else 0, "params": dict(trial.params),
            "run_dir": trial.user_attrs.get("run_dir"), "set": trial.user_attrs.get("overrides"),
            "error": trial.user_attrs.get("error"), "curve": [[step, _finite(v)] for step, v in curve]}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def report(study: Any, settings: TuneSettings, runtime: Any) -> TuneResult:
    """Write study.json, best.yaml and the pictures of a study as it stands."""
    from dlguide._rundir import write_text_atomic
    from dlguide._tune import redact

    out = Path(settings.out)
    rows = [trial_row(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    pick = min if settings.direction == "minimize" else max
    best = pick(complete, key=lambda r: r["value"]) if complete else None
    files = [draw_history(rows, out / "optimization_history.png", settings)]
    importances = param_importances(study, len(complete))
    if importances:
        files.append(draw_importances(importances, out / "param_importances.png", settings.study))
    if best is not None:
        files.append(write_best(best, out / "best.yaml", settings, runtime))
    states = {state: sum(r["state"] == state for r in rows) for state in sorted({r["state"] for r in rows})}
    summary = {"study": settings.study, "storage": redact(settings.storage), "task": settings.task,
               "monitor": settings.monitor, "direction": settings.direction, "space": settings.signature()["space"],
               "set": settings.sets, "sampler": settings.sampler, "pruner": settings.pruner,
               "trials": len(rows), "states": states, "epochs_total": sum(r["epochs"] for r in rows),
               "best": best, "param_importances": importances, "trial_rows": rows}
    write_text_atomic(out / "study.json", json.dumps(summary, indent=2, default=str) + "\n")
    files.append(out / "study.json")
    return TuneResult(settings.study, out, settings.monitor, settings.direction, rows, best, files)


def write_best(best: dict[str, Any], path: Path, settings: TuneSettings, runtime: Any) -> Path:
    """The best trial's full resolved config, as ``dlguide run TASK --config`` takes it."""
    from dlguide._config import dump_yaml, to_dict
    from dlguide._rundir import RunDir, write_text_atomic
    from dlguide._runs import build_task

    run = RunDir(best["run_dir"] or "")
    if best["run_dir"] and run.config_path.is_file():
        _, config = run.read_config()  # without its "task" key
    else:  # run by a worker on another machine: resolved again from its values
        config = to_dict(build_task(settings.task, overrides=best["set"], runtime=runtime).config)
    head = (f"# best trial {best['number']} of study {settings.study!r}: {settings.monitor} {best['value']:.6g}\n"
            f"# dlguide run {settings.task} --config {path}\n")
    write_text_atomic(path, head + dump_yaml(config))
    return path


def param_importances(study: Any, complete: int) -> dict[str, float] | None:
    """fANOVA's importance of each sampled key for the objective (Optuna's, seeded), once two trials
    completed; Optuna's default evaluator where scikit-learn, which fANOVA fits with, is missing."""
    import optuna

    if complete < 2:
        return None
    fanova = importlib.util.find_spec("sklearn") is not None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0) if fanova else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            return {k: float(v) for k, v in found.items()}
    except (ImportError, ValueError, RuntimeError, ZeroDivisionError):  # no scikit-learn; a space it cannot rate
        return None


def draw_history(rows: Sequence[dict[str, Any]], path: Path, settings: TuneSettings) -> Path:
    """Left: each trial's value and the best so far; right: the monitored value per epoch of every
    trial (pruned ones dashed), where pruning shows."""
    from dlguide._plots import figure

    fig = figure(11, 4)
    left, right = fig.subplots(1, 2)
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    pruned = [r for r in rows if r["state"] == "PRUNED" and r["curve"] and r["curve"][-1][1] is not None]
    left.scatter([r["number"] for r in complete], [r["value"] for r in complete], s=18, label="complete")
    left.scatter([r["number"] for r in pruned], [r["curve"][-1][1] for r in pruned], s=18, marker="x",
                 color="grey", label="pruned (last value)")
    best: list[float] = []
    for r in complete:
        better = not best or (r["value"] < best[-1] if settings.direction == "minimize" else r["value"] > best[-1])
        best.append(r["value"] if better else best[-1])
    left.step([r["number"] for r in complete], best, where="post", color="tab:red", label="best so far")
    left.set_xlabel("trial")
    left.set_ylabel(settings.monitor)
    for r in rows:
        if r["curve"]:
            steps, values = zip(*r["curve"])
            right.plot(steps, values, linestyle="--" if r["state"] == "PRUNED" else "-", linewidth=1,
                       color="grey" if r["state"] == "PRUNED" else None)
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_ylabel(f"{settings.monitor} (dashed: pruned)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if complete or pruned:
        left.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"study {settings.study}: {settings.direction} {settings.monitor}")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    fig.savefig(path, dpi=100)
    return path


def draw_importances(importances: Mapping[str, float], path: Path, study: str) -> Path:
    from dlguide._plots import figure

    keys = sorted(importances, key=importances.get)
    fig = figure(6, 1.2 + 0.4 * len(keys))
    ax = fig.subplots()
    ax.barh(keys, [importances[k] for k in keys])
    ax.set_xlabel("importance for the objective (sums to 1)")
    ax.set_title(f"study {study}: parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def format_trials(result: TuneResult) -> str:
    """The trials as an aligned table, then where the best config is."""
    head = ("trial", "state", result.monitor, "epochs", "params")
    body = [(str(r["number"]), r["state"], "-" if r["value"] is None else f"{r['value']:.6g}", str(r["epochs"]),
             " ".join(f"{k}={as_text(v)}" for k, v in r["params"].items())) for r in result.trials]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(4)]
    lines = ["  ".join(c.rjust(w) if i in (0, 3) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             + "  " + row[4] for row in (head, *body)]
    if result.best is None:
        lines.append(f"no trial of study {result.study!r} has completed yet")
    else:
        lines.append(f"best: trial {result.best['number']}, {result.monitor} {result.best['value']:.6g}; "
                     f"its config: {result.out / 'best.yaml'}")
    return "\n".join(lines)
