"""The library functions behind ``dlguide run``, ``resume``, ``eval`` and ``predict``.

Tests and notebooks call these directly; the CLI is a thin layer over them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlguide import _config as cfgmod
from dlguide._errors import UsageError
from dlguide._plugins import Runtime, get_runtime
from dlguide._rundir import RunDir


@dataclasses.dataclass
class RunResult:
    """Where a run went and what it measured."""

    task: str
    run_dir: Path
    metrics: dict[str, float]


def task_class(name: str, runtime: Runtime | None = None) -> type:
    """The Task class registered under ``name`` (imports its module)."""
    from dlguide._task import Task

    rt = runtime or get_runtime()
    cls = rt.registry.load("task", name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UsageError(f"task {name!r} ({rt.registry.get('task', name).target}) is not a dlguide Task class")
    return cls


def build_task(name: str, *, base: Mapping[str, Any] | None = None, config_file: str | Path | None = None,
               overrides: Iterable[str] = (), runtime: Runtime | None = None) -> Any:
    """Instantiate a task with its config resolved from defaults, ``base``, a file and overrides."""
    cls = task_class(name, runtime)
    config = cfgmod.resolve(cls.Config, base=base, file=config_file, overrides=overrides)
    return cls(config, name=name)


def run_task(name: str, *, config_file: str | Path | None = None, overrides: Iterable[str] = (),
             out: str | Path | None = None, base: Mapping[str, Any] | None = None,
             runtime: Runtime | None = None, progress: str = "auto") -> RunResult:
    """Train ``name`` into a new run directory and return its final metrics."""
    from dlguide._trainer import Trainer

    from dlguide._data import resolve_device

    rt = runtime or get_runtime()
    task = build_task(name, base=base, config_file=config_file, overrides=overrides, runtime=rt)
    resolve_device(task.config.device)  # a missing device is a usage error before anything is written
    run_dir = RunDir.new(name, out)
    metrics = Trainer(task, run_dir, runtime=rt, progress=progress).fit()
    return RunResult(name, run_dir.path, metrics)


def resume_run(path: str | Path, *, overrides: Iterable[str] = (), runtime: Runtime | None = None,
               progress: str = "auto") -> RunResult:
    """Continue an interrupted run from its last checkpoint, or extend a finished one (``epochs=N``)."""
    from dlguide._checkpoint import load_checkpoint
    from dlguide._trainer import Trainer

    rt = runtime or get_runtime()
    run_dir = RunDir.existing(path)
    name, saved = run_dir.read_config()
    if not run_dir.last_ckpt.is_file():
        raise UsageError(f"{run_dir.path} has no checkpoint to resume from (checkpoints/last.ckpt)")
    task = build_task(name, base=saved, overrides=overrides, runtime=rt)
    ckpt = load_checkpoint(run_dir.last_ckpt, name)
    task.meta = dict(ckpt.get("meta") or {})
    done = int(ckpt["epoch"])
    if done >= task.config.epochs and not int(ckpt.get("batch_in_epoch", 0)):
        raise UsageError(f"{run_dir.path} already finished {done} epochs; extend it with --set epochs={done + 5}")
    metrics = Trainer(task, run_dir, runtime=rt, progress=progress).fit(ckpt_path=run_dir.last_ckpt)
    return RunResult(name, run_dir.path, metrics)


def load_run(path: str | Path, *, runtime: Runtime | None = None) -> Any:
    """Rebuild a finished run's task with its model and weights, ready for ``predict`` or plugin commands."""
    from dlguide._data import resolve_device
    from dlguide._trainer import load_weights

    rt = runtime or get_runtime()
    run_dir = RunDir.existing(path)
    name, saved = run_dir.read_config()
    if not run_dir.weights.is_file():
        raise UsageError(f"{run_dir.path} has no trained weights yet (model.safetensors); finish it with "
                         f"'dlguide resume {run_dir.path}'")
    task = build_task(name, base=saved, runtime=rt)
    task.meta = run_dir.read_meta()
    task.run_dir = run_dir.path
    device = resolve_device(task.config.device)
    model = task.build_model().to(device)
    load_weights(model, run_dir.weights)
    model.eval()
    task.model = model
    return task


def evaluate_run(path: str | Path, *, split: str = "test", runtime: Runtime | None = None) -> dict[str, float]:
    """Recompute a finished run's metrics on ``split`` from its saved weights; writes ``eval.json``."""
    from dlguide._trainer import Trainer

    rt = runtime or get_runtime()
    run_dir = RunDir.existing(path)
    name, saved = run_dir.read_config()
    task = build_task(name, base=saved, runtime=rt)
    metrics = Trainer(task, run_dir, runtime=rt, progress="none").evaluate(run_dir.weights, split)
    run_dir.write_final(metrics, "eval.json")
    return metrics


def read_input_file(path: str | Path) -> list[str]:
    """Inputs listed one per line in a UTF-8 text file (``predict --file``); blank lines are skipped."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read input file {file}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{file} is not UTF-8 text: invalid byte at offset {exc.start}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def predict_run(path: str | Path, inputs: Sequence[str], *, out: str | Path | None = None,
                runtime: Runtime | None = None) -> list[str]:
    """Predict with a finished run; returns one printable line per prediction.

    ``out`` is a folder for tasks whose predictions are files (label volumes, images); such a
    task's ``predict`` takes an ``out_dir`` keyword.
    """
    if not inputs:
        raise UsageError("predict needs at least one input")
    task = load_run(path, runtime=runtime)
    kwargs: dict[str, Any] = {}
    if out is not None:
        import inspect

        if "out_dir" not in inspect.signature(task.predict).parameters:
            raise UsageError(f"task {task.name!r} prints its predictions and writes no files; drop --out")
        kwargs["out_dir"] = Path(out)
    import torch

    with torch.no_grad():
        rows = task.predict(list(inputs), **kwargs)
    return [task.format_prediction(row) for row in rows]
