"""The library functions behind ``dlguide run``, ``resume``, ``eval`` and ``predict``.

Tests and notebooks call these directly; the CLI is a thin layer over them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlguide import _config as cfgmod
from dlguide._config import to_dict
from dlguide._errors import UsageError
from dlguide._inference import RawInput
from dlguide._plugins import Runtime, get_runtime
from dlguide._registry import domain_of
from dlguide._rundir import RunDir

if TYPE_CHECKING:
    from dlguide._strategy import Strategy


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
    try:
        entry = rt.registry.get("task", name)
    except UsageError:
        owner = next((p for p in rt.plugins if p.name == domain_of(name) and p.status != "ok"), None)
        if owner is None:
            raise
        why = ("is disabled by DLGUIDE_DISABLE_PLUGINS" if owner.status == "disabled"
               else f"did not load ({owner.status}); see 'dlguide plugins'")
        raise UsageError(f"task {name!r} is not available: its plugin {owner.name!r} {why}") from None
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UsageError(f"task {name!r} ({rt.registry.get('task', name).target}) is not a dlguide Task class")
    return cls


def build_task(name: str, *, base: Mapping[str, Any] | None = None, config_file: str | Path | None = None,
               overrides: Iterable[str] = (), runtime: Runtime | None = None, validate: bool = True) -> Any:
    """Instantiate a task with its config resolved from defaults, ``base``, a file and overrides.

    Keys whose choices come from the registry (``option(registry="model")``) are checked
    against it, and the monitored metric must have a known direction, before anything runs.
    """
    rt = runtime or get_runtime()
    cls = task_class(name, rt)
    config = cfgmod.resolve(cls.Config, base=base, file=config_file, overrides=overrides, validate=validate)
    cfgmod.check_registered(config, lambda kind: rt.registry.choices(kind, name))
    data_dir = getattr(config, "data_dir", None)
    if validate and data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UsageError(f"data_dir {data_dir} is a file; expected the folder that holds the data set")
    task = cls(config, name=name)
    task._runtime = rt
    task.monitor_mode()
    return task


def run_task(name: str, *, config_file: str | Path | None = None, overrides: Iterable[str] = (),
             out: str | Path | None = None, base: Mapping[str, Any] | None = None,
             runtime: Runtime | None = None, progress: str = "auto", strategy: Strategy | None = None,
             plugins: Mapping[str, object] | None = None) -> RunResult:
    """Train ``name`` into a new run directory and return its final metrics.

    ``plugins`` are hook implementations for this run only (name -> object); ``strategy``
    replaces the single-device default.
    """
    from dlguide._strategy import make_strategy
    from dlguide._trainer import Trainer

    rt = runtime or get_runtime()
    task = build_task(name, base=base, config_file=config_file, overrides=overrides, runtime=rt)
    strategy = strategy or make_strategy(task.config)
    strategy.setup()  # a missing device is a usage error before anything is written
    made, error, run_dir = None, None, None
    if strategy.is_writer:  # the first process makes the directory; the others are told where it is
        try:
            run_dir = RunDir.new(name, out)
            made = str(run_dir.path)
            # the config first: a run stopped before its first checkpoint (while its data load,
            # or a run inside it trains) is started again by 'dlguide resume'
            run_dir.write_config(name, to_dict(task.config))
        except UsageError as exc:
            error = str(exc)
    made, error = strategy.broadcast((made, error))
    if error is not None:
        raise UsageError(error)
    run_dir = run_dir or RunDir(made)
    try:
        metrics = Trainer(task, run_dir, runtime=rt, progress=progress, strategy=strategy, plugins=plugins).fit()
    except UsageError:
        if strategy.is_writer:  # refused before its first checkpoint (its data, a setting): it leaves nothing
            run_dir.discard()
        raise
    finally:
        run_dir.unlock()
    return RunResult(name, run_dir.path, metrics)


def resume_run(path: str | Path, *, overrides: Iterable[str] = (), runtime: Runtime | None = None,
               progress: str = "auto", strategy: Strategy | None = None,
               plugins: Mapping[str, object] | None = None) -> RunResult:
    """Continue an interrupted run from its last checkpoint, or extend a finished one (``epochs=N``).

    Only the config's ``resume_keys`` may change (``epochs``, ``lr``, ``early_stopping_patience``,
    ``checkpoint_interval``, ``num_workers``, ``device``, ...): the learning-rate schedule is
    rebuilt from the new config at the saved step. Any other changed key is a UsageError.

    A run stopped after its last epoch but before its end (test pass, weights, metrics) is
    finished; one that never wrote a checkpoint starts again from its saved config. What a
    crashed write left (temporary files, a torn last row of ``metrics.jsonl``) is cleaned up.
    The directory is locked while the run continues.
    """
    from dlguide._checkpoint import load_checkpoint
    from dlguide._trainer import Trainer

    rt = runtime or get_runtime()
    run_dir = RunDir.existing(path)
    writer = (strategy.rank if strategy is not None else int(os.environ.get("RANK", "0"))) == 0
    if writer:
        run_dir.lock()
    try:
        name, saved = run_dir.read_config()
        if writer:
            run_dir.remove_stale_temporaries()
        overrides = list(overrides)
        task = build_task(name, base=saved, overrides=overrides, runtime=rt)
        if overrides:
            as_saved = cfgmod.resolve(type(task.config), base=saved)
            refused = [k for k in cfgmod.changed_keys(as_saved, task.config) if k not in task.config.resume_keys]
            if refused:
                allowed = ", ".join(sorted(task.config.resume_keys))
                was = cfgmod.value_at(as_saved, refused[0])
                raise UsageError(f"{refused[0]!r} cannot change when a run resumes (it was "
                                 f"{str(was) if isinstance(was, Path) else was!r}); keys that may: {allowed}")
        trainer = Trainer(task, run_dir, runtime=rt, progress=progress, strategy=strategy, plugins=plugins)
        if not run_dir.last_ckpt.is_file():
            if writer:
                run_dir.clear_unstarted()
                if progress != "none":
                    print(f"{run_dir.path} has no checkpoint yet: starting it again from its saved config",
                          file=sys.stderr, flush=True)
            return RunResult(name, run_dir.path, trainer.fit())
        ckpt = load_checkpoint(run_dir.last_ckpt, name)
        task.meta = dict(ckpt.get("meta") or {})
        done = int(ckpt["epoch"])
        finished = run_dir.final_metrics.is_file() and run_dir.weights.is_file()
        if done >= task.config.epochs and not int(ckpt.get("batch_in_epoch", 0)) and finished:
            raise UsageError(f"{run_dir.path} already finished {done} epochs; extend it with --set epochs={done + 5}")
        # trained to the end but stopped before its test pass and weights: fit skips to the end
        metrics = trainer.fit(ckpt_path=run_dir.last_ckpt)
    finally:
        run_dir.unlock()
    return RunResult(name, run_dir.path, metrics)


def load_run(path: str | Path, *, runtime: Runtime | None = None, device: str | None = None) -> Any:
    """Rebuild a finished run's task with its model and weights, in eval mode, ready for
    inference (``dlguide.predict``) or a plugin's commands; its training data are not read."""
    run_dir = RunDir.existing(path)
    if not run_dir.weights.is_file():
        raise UsageError(f"{run_dir.path} has no trained weights yet (model.safetensors); finish it with "
                         f"'dlguide resume {run_dir.path}'")
    return load_task(run_dir.path, runtime=runtime, device=device)


def load_task(folder: Path, *, runtime: Runtime | None = None, device: str | None = None) -> Any:
    """The task of a folder holding ``config.yaml``, ``task.json`` and ``model.safetensors`` (a
    finished run, or an export bundle already checked against its manifest), model loaded."""
    from dlguide._data import resolve_device
    from dlguide._trainer import load_weights

    rt = runtime or get_runtime()
    files = RunDir(folder)
    name, saved = files.read_config()
    task = build_task(name, base=saved, runtime=rt, validate=False)  # its data may be gone: inference needs none
    task.meta = files.read_meta()
    task.run_dir = files.path
    model = task.build_model().to(resolve_device(device or task.config.device))
    load_weights(model, files.weights)
    model.eval()
    task.model = task.module = model
    return task


def evaluate_run(path: str | Path, *, split: str = "test", runtime: Runtime | None = None) -> dict[str, float]:
    """Recompute a finished run's metrics on ``split`` from its saved weights; writes ``eval.json``."""
    from dlguide._trainer import Trainer

    rt = runtime or get_runtime()
    run_dir = RunDir.existing(path)
    name, saved = run_dir.read_config()
    if not run_dir.weights.is_file():
        raise UsageError(f"{run_dir.path} has no trained weights yet (model.safetensors); finish it with "
                         f"'dlguide resume {run_dir.path}'")
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


def predict_run(path: str | Path, inputs: Sequence[str | RawInput], *, out: str | Path | None = None,
                runtime: Runtime | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Predict with a finished run through its task's decode -> predict_step -> encode.

    ``inputs`` are raw inputs, or command-line words read as the task's ``input_kind`` says
    (file paths, texts, JSON values). Returns the loaded task (for ``format_prediction``) and
    one JSON-safe result per input. A task that writes files writes them into ``out``
    (default: ``RUN/predictions``); for any other task ``out`` is a usage error.
    """
    from dlguide._inference import cli_inputs, predict

    if not inputs:
        raise UsageError("predict needs at least one input")
    task = load_run(path, runtime=runtime)
    if out is not None and not task.writes_files:
        raise UsageError(f"task {task.name!r} prints its predictions and writes no files; drop --out")
    raws = [i if isinstance(i, RawInput) else cli_inputs(task, [i])[0] for i in inputs]
    out_dir = Path(out) if out is not None else (Path(path) / "predictions" if task.writes_files else None)
    return task, predict(task, raws, out_dir=out_dir)
