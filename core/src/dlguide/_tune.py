"""``dlguide tune``: a hyperparameter search over any task with Optuna.

    dlguide tune example.sine --space space.yaml --trials 20 --out runs/sine-tune
    dlguide run example.sine --config runs/sine-tune/best.yaml

    # space.yaml: config keys and the distributions they are drawn from
    lr: {loguniform: [1e-4, 1e-1]}
    hidden: {int: [8, 64], step: 8}      # int also takes log: true
    dropout: {uniform: [0, 0.5]}         # uniform also takes step
    model: {choice: [cnn, lenet5]}

Each trial is an ordinary run directory (``OUT/trial_0003``) started by ``run_task`` with the
``--set`` values and the sampled ones; a run-scoped hook object reports the task's ``monitor``
to Optuna at every epoch end and, when the pruner says so, stops the run as early stopping
does (the run finishes cleanly, the trial is PRUNED). A trial's value is its run's best
monitored value. The study lives in ``OUT/study.db`` (SQLite) unless ``--storage`` names
another database (PostgreSQL for processes on several machines); rerunning the command goes
on with the study. ``--workers K`` starts K processes that share the storage: threads would
share torch's global random state and seeding, which every run resets. At the end: a table of
the trials, ``best.yaml`` (the best run's resolved config), ``study.json`` and two pictures.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dlguide._errors import (
    DlguideError,
    RunError,
    RunInterrupted,
    UsageError,
    first_line,
)
from dlguide._tune_report import TuneResult, format_trials, report, trial_row
from dlguide._tune_space import Dimension, as_text, read_space
from dlguide.hookspecs import hookimpl

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
#: a RUNNING trial whose process has sent no heartbeat for two of these is marked FAIL
HEARTBEAT_S = 30
#: epochs a trial trains before the median pruner judges it (the first epoch's figures are too noisy)
JUDGED_FROM_EPOCH = 2
DRIVERS = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
           "pymysql": "pymysql"}


def require_optuna() -> None:
    if importlib.util.find_spec("optuna") is None:
        raise UsageError("dlguide tune needs optuna: pip install 'dlguide-core[tune]'")


# -- settings ---------------------------------------------------------------------------------
@dataclasses.dataclass
class TuneSettings:
    """One ``dlguide tune`` command, checked; what each worker process is given."""

    task: str
    space: list[Dimension]
    space_file: str
    study: str
    storage: str
    out: str
    trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    startup_trials: int = 5
    workers: int = 1
    sets: list[str] = dataclasses.field(default_factory=list)
    seed: int | None = None
    quiet: bool = False
    # from the task's config, once the space is checked against it
    monitor: str = ""
    direction: str = ""
    epochs: int = 0

    def signature(self) -> dict[str, Any]:
        """What trials of one study must share: kept in the study, compared when it is continued."""
        return {"task": self.task, "space": {d.key: d.as_dict() for d in self.space}, "set": list(self.sets)}


def _flat_keys(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def check_space(settings: TuneSettings, runtime: Any) -> None:
    """Build the task's config with each dimension's extreme values (and the ``--set`` ones), so
    that an unknown key or a value of the wrong type is a usage error before any trial."""
    from dlguide._config import describe, parse_overrides
    from dlguide._runs import build_task

    where = f"space file {settings.space_file}"
    base = build_task(settings.task, overrides=settings.sets, runtime=runtime)
    fixed = _flat_keys(parse_overrides(settings.sets))
    types = {info.key: info.type.split(" | ") for info in describe(type(base.config))}
    for dim in settings.space:
        if dim.key in fixed:
            raise UsageError(f"{dim.key!r} is both in the {where} and set with --set; drop one")
        numeric = {"int": {"int", "float"}, "uniform": {"float"}, "loguniform": {"float"}}.get(dim.kind, set())
        if numeric and dim.key in types and not numeric & set(types[dim.key]):
            instead = "int" if "int" in types[dim.key] else "choice"
            raise UsageError(f"{where}: {dim.key!r} has type {' | '.join(types[dim.key])}; {dim.kind} draws "
                             f"{'integers' if dim.kind == 'int' else 'real numbers'} (use {instead})")
        for value in dim.extremes():  # an unknown key, a value out of range, a choice the task lacks
            try:
                build_task(settings.task, overrides=[*settings.sets, f"{dim.key}={as_text(value)}"], runtime=runtime)
            except UsageError as exc:
                raise UsageError(f"{where}: {first_line(exc)}") from None
        if settings.sampler == "grid":
            dim.grid()
    settings.monitor = base.config.monitor
    settings.direction = "maximize" if base.monitor_mode() == "max" else "minimize"
    settings.epochs = base.config.epochs


def make_settings(task: str, space: str | Path, *, trials: int = 20, timeout: float | None = None,
                  study: str | None = None, storage: str | None = None, sampler: str = "tpe", pruner: str = "median",
                  startup_trials: int = 5, workers: int = 1, out: str | Path | None = None,
                  overrides: Iterable[str] = (), seed: int | None = None, quiet: bool = False) -> TuneSettings:
    """The command's options checked, as one-line usage errors."""
    for name, value, low in (("trials", trials, 0), ("workers", workers, 1), ("startup-trials", startup_trials, 0)):
        if value < low:
            raise UsageError(f"--{name} must be >= {low}, not {value}")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, not {timeout}")
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise UsageError(f"unknown sampler {sampler!r} or pruner {pruner!r}; expected a sampler among "
                         f"{', '.join(SAMPLERS)} and a pruner among {', '.join(PRUNERS)}")
    dims = read_space(space)
    study = study or Path(space).stem
    folder = Path(out) if out is not None else Path("runs") / task / f"tune-{study}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; expected the study folder")
    return TuneSettings(task=task, space=dims, space_file=str(space), study=study,
                        storage=storage or f"sqlite:///{(folder / 'study.db').resolve()}", out=str(folder),
                        trials=trials, timeout=timeout, sampler=sampler, pruner=pruner, startup_trials=startup_trials,
                        workers=workers, sets=list(overrides), seed=seed, quiet=quiet)


# -- the study --------------------------------------------------------------------------------
def redact(url: str) -> str:
    """A storage URL without its password, for messages and study.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str) -> Any:
    """Optuna's RDB storage with heartbeats (a killed worker's trial is failed, not left running)."""
    import optuna

    given = url
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")  # SQLAlchemy 2.1 defaults to psycopg 3
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # waits for the file's lock
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S)
        except ImportError as exc:  # the database's driver
            module = getattr(exc.__cause__, "name", None) or exc.name or "its driver"
            raise UsageError(f"storage {redact(given)} needs the module {module}: pip install "
                             f"{DRIVERS.get(module, module)}") from None
        except (IntegrityError, ProgrammingError) as exc:
            # processes that open a new database together race to create its tables; the losers
            # find them made when they look again
            attempt += 1
            if attempt == 4:
                raise UsageError(f"cannot open storage {redact(given)}: {first_line(exc)}") from None
            time.sleep(0.5 * attempt)
        except Exception as exc:  # a bad URL, a server that refuses
            raise UsageError(f"cannot open storage {redact(given)}: {first_line(exc)}") from None


def _sampler(settings: TuneSettings, done: int, worker: int) -> Any:
    """Each worker, and each rerun, draws from its own seed: the same one would repeat the same trials."""
    import numpy as np
    import optuna

    seed = None if settings.seed is None else int(np.random.SeedSequence([settings.seed, done, worker])
                                                  .generate_state(1)[0])
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: d.grid() for d in settings.space}, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: a running trial counts as a bad one, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials, constant_liar=True)


def _pruner(settings: TuneSettings) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=JUDGED_FROM_EPOCH)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(settings.epochs, 1))
    return optuna.pruners.NopPruner()


def open_study(settings: TuneSettings, storage: Any, done: int = 0, worker: int = 0) -> Any:
    """Create the study, or load it when it exists and was made with the same task, space and ``--set``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial is told in one line of ours
    study = optuna.create_study(storage=storage, study_name=settings.study, direction=settings.direction,
                                load_if_exists=True, sampler=_sampler(settings, done, worker),
                                pruner=_pruner(settings))
    saved = study.user_attrs.get("dlguide")
    if saved is None:
        study.set_user_attr("dlguide", settings.signature())
    elif saved != json.loads(json.dumps(settings.signature())):
        raise UsageError(f"study {settings.study!r} in {redact(settings.storage)} was made for {saved['task']} with "
                         "another space or other --set values; continue it with those or choose another --study")
    if study.direction.name.lower() != settings.direction:
        raise UsageError(f"study {settings.study!r} is to {study.direction.name.lower()} {settings.monitor}, "
                         f"not {settings.direction}; choose another --study")
    return study


class TrialFailed(Exception):
    """A trial's run stopped on an error of its own (a NaN loss, a bad combination of values)."""


class PruningReporter:
    """A run's hook object: reports the monitored metric to the Optuna trial at each epoch end and
    stops the run cleanly, as early stopping does, when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    @hookimpl
    def dlguide_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        from dlguide._callbacks import monitored

        value = float(monitored(trainer, metrics))
        self.trial.report(value, epoch)
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True
            trainer.stop_reason = f"pruned by the tuner at epoch {epoch}: {trainer.config.monitor} {value:.6g}"


class Objective:
    """One trial: an ordinary run of the task with the sampled values set."""

    def __init__(self, settings: TuneSettings, runtime: Any) -> None:
        self.settings, self.runtime = settings, runtime

    def __call__(self, trial: Any) -> float:
        import optuna

        from dlguide._runs import run_task

        s = self.settings
        params = {dim.key: dim.suggest(trial) for dim in s.space}
        sets = [*s.sets, *(f"{key}={as_text(value)}" for key, value in params.items())]
        run_dir = Path(s.out) / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("overrides", sets)
        reporter = PruningReporter(trial)
        try:
            result = run_task(s.task, overrides=sets, out=run_dir, runtime=self.runtime, progress="none",
                              plugins={"dlguide.tune": reporter})
        except RunInterrupted as exc:  # its run could be resumed, but the trial is over: the study goes on
            raise RunInterrupted(f"interrupted in trial {trial.number}; the study keeps the trials it finished: "
                                 "rerun the command to go on", exc.exit_code - 128) from None
        except DlguideError as exc:
            trial.set_user_attr("error", first_line(exc))
            raise TrialFailed(first_line(exc)) from None
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {reporter.pruned_at}")
        return float(result.metrics[s.monitor])  # the best epoch's figure (metrics.json)


def _say_trial(monitor: str) -> Any:
    def callback(study: Any, trial: Any) -> None:
        row = trial_row(trial)
        params = " ".join(f"{k}={as_text(v)}" for k, v in row["params"].items())
        value = "" if row["value"] is None else f"  {monitor} {row['value']:.6g}"
        why = f": {row['error']}" if row["error"] else ""
        print(f"trial {row['number']} {row['state'].lower()}{why}{value}  ({row['epochs']} epochs)  {params}",
              file=sys.stderr, flush=True)
    return callback


def optimize(settings: TuneSettings, quota: int, worker: int = 0, done: int = 0, runtime: Any = None) -> None:
    """Run ``quota`` trials of the study in this process (a worker)."""
    from dlguide._plugins import get_runtime

    study = open_study(settings, open_storage(settings.storage), done, worker)
    callbacks = [] if settings.quiet else [_say_trial(settings.monitor)]
    study.optimize(Objective(settings, runtime or get_runtime()), n_trials=quota, timeout=settings.timeout,
                   catch=(TrialFailed,), callbacks=callbacks)


def _worker_main(settings: TuneSettings, quota: int, worker: int, done: int) -> None:
    """A worker process's body: its share of the trials, errors as one line and an exit code."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))  # the workers share the cores
    try:
        optimize(settings, quota, worker, done)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # told as the command tells it, in one line
        what = first_line(exc) if isinstance(exc, DlguideError) else f"{type(exc).__name__}: {first_line(exc)}"
        print(f"dlguide: error: worker {worker}: {what}", file=sys.stderr, flush=True)
        sys.exit(getattr(exc, "exit_code", 1))


def _run_workers(settings: TuneSettings, done: int) -> list[tuple[int, int]]:
    """K processes share the trials; returns (worker, exit code) of those that failed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state forked
    k = settings.workers
    quotas = [settings.trials // k + (i < settings.trials % k) for i in range(k)]
    procs = [(i, context.Process(target=_worker_main, args=(settings, q, i, done), name=f"dlguide-tune-{i}"))
             for i, q in enumerate(quotas) if q]
    for _, proc in procs:
        proc.start()
    try:
        for _, proc in procs:
            proc.join()
    except KeyboardInterrupt:  # the workers got the signal too: they checkpoint their runs and stop
        for _, proc in procs:
            proc.join(timeout=60)
        raise
    return [(i, proc.exitcode) for i, proc in procs if proc.exitcode]


# -- the command ------------------------------------------------------------------------------
def tune(task: str, space: str | Path, *, runtime: Any = None, **options: Any) -> TuneResult:
    """Run a study (``options``: those of ``make_settings``) and report it; see the module's docstring."""
    require_optuna()
    from dlguide._plugins import get_runtime

    rt = runtime or get_runtime()
    settings = make_settings(task, space, **options)
    check_space(settings, rt)  # before anything is written: a bad space leaves nothing
    out = Path(settings.out)
    marker = out / "study.json"
    if marker.is_file():
        try:
            known = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UsageError(f"{marker} is not a study summary; choose another --out") from None
        if (known.get("study"), known.get("storage")) != (settings.study, redact(settings.storage)):
            raise UsageError(f"{out} holds study {known.get('study')!r} ({known.get('storage')}); choose another --out")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # first: the default storage is a file in it
    try:
        study = open_study(settings, open_storage(settings.storage))
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    done = len(study.get_trials(deepcopy=False))
    if not done and any(out.glob("trial_*")):
        raise UsageError(f"{out} holds trial folders of a study that {redact(settings.storage)} does not have; "
                         "choose another --out")
    failed: list[tuple[int, int]] = []
    if settings.trials and settings.workers == 1:
        optimize(settings, settings.trials, 0, done, rt)
    elif settings.trials:
        failed = _run_workers(settings, done)
    result = report(study, settings, rt)
    if failed:
        worker, code = failed[0]
        raise RunError(f"{len(failed)} of {settings.workers} workers failed (worker {worker}: exit code {code}); "
                       "their running trials are lost, the others are kept: rerun the command to go on")
    return result


def add_tune_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("tune", help="search a task's hyperparameters with Optuna (each trial is a run)")
    p.add_argument("task", metavar="TASK", nargs="?")  # or the word after --set values
    p.add_argument("--space", metavar="FILE", required=True,
                   help="YAML file of config keys and distributions: loguniform, uniform, int, choice")
    p.add_argument("--trials", metavar="N", type=int, default=20, help="trials this command runs (0: report only)")
    p.add_argument("--timeout", metavar="S", type=float, help="start no trial after S seconds")
    p.add_argument("--study", metavar="NAME", help="study name (default: the space file's name); a rerun continues it")
    p.add_argument("--storage", metavar="URL", help="database URL of the study, e.g. postgresql://user@host/db to "
                   "share it between machines (default sqlite:///OUT/study.db)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="how values are drawn (grid: every combination)")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help=f"stops poor trials early (median: judged from epoch {JUDGED_FROM_EPOCH})")
    p.add_argument("--startup-trials", metavar="N", type=int, default=5,
                   help="trials drawn at random and never pruned before TPE and the median pruner take over")
    p.add_argument("--workers", metavar="K", type=int, default=1, help="trial processes in parallel")
    p.add_argument("--out", metavar="DIR", help="study folder (default runs/TASK/tune-STUDY)")
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="config keys every trial shares")
    p.add_argument("--seed", metavar="S", type=int, help="seed of the sampler")
    p.add_argument("--quiet", action="store_true", help="no line per trial, the table only")
    p.set_defaults(handler=cmd_tune)
    return p


def cmd_tune(args: argparse.Namespace) -> int:
    from dlguide._cli import _positional

    require_optuna()
    _positional(args, "task", "TASK")
    result = tune(args.task, args.space, runtime=args.runtime, trials=args.trials, timeout=args.timeout,
                  study=args.study, storage=args.storage, sampler=args.sampler, pruner=args.pruner,
                  startup_trials=args.startup_trials, workers=args.workers, out=args.out, overrides=args.set,
                  seed=args.seed, quiet=args.quiet)
    print(format_trials(result))
    if result.best is None:
        raise RunError(f"no trial of study {result.study!r} completed; see the table and {result.out / 'study.json'}")
    return 0
