"""``dlguide plugin check [NAME|PATH]``: the conformance suite a plugin author runs.

    dlguide plugin check                      # the plugin project in the current folder
    dlguide plugin check ../dlguide-foo       # a project folder: its [project.entry-points.dlguide]
    dlguide plugin check vision               # an installed plugin, by its entry-point name
    dlguide plugin check . --out runs/check   # keep the check's run directories

Each check prints one line, ``ok``, ``skipped`` or ``FAILED`` and why; the exit code is 0 when
none failed, 1 when one did, 2 for a usage error (an unknown plugin name, a folder without a
plugin project). The checks, in order:

1. the entry point resolves. A project folder's distribution should be installed (``pip
   install -e FOLDER``); one that is not is loaded from the import path (``PYTHONPATH``), and
   the line says that ``dlguide`` finds it only once it is installed;
2. its hooks have the names and arguments of the specs (``dlguide.hookspecs``);
3. what it registers imports: every task, model and dataset target, and each task's config class;
4. its plugin module imports no torch (checked in a fresh interpreter, naming who imported it);
5. for each task it registers: one batch (``fast_dev_run``, under ``GuardedStrategy``); an exact
   resume (two epochs, stopped after the first as SIGINT stops a run, then resumed, against an
   uninterrupted run: the same weights bit for bit and the same test metrics); a prediction of
   its reference inputs by the reloaded run; export and verify (with ``dlguide-core[export]``);
   and a served prediction (with ``dlguide-core[serve]``).

The runs take the task's demo settings, then ``limit_train_batches=2 limit_eval_batches=1
seed=0``, then the task's own ``check`` settings (``registry.add_task(..., check={...})``: a
smaller model or data set where the others leave the task slow), and always ``epochs=2
device=cpu``. They go to a temporary folder, or to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from dlguide._config import tomllib  # the standard library's, or tomli on Python 3.10
from dlguide._errors import DlguideError, UsageError, did_you_mean
from dlguide._plugins import GROUP, Runtime

#: what every task's check runs add to its demo settings; the task's ``check`` settings come after
LIMITS = {"limit_train_batches": 2, "limit_eval_batches": 1, "seed": 0}
#: what no setting overrides: the resume check stops the run after its first epoch of two, on the
#: CPU, where an interrupted run resumes bit for bit
FIXED = {"epochs": 2, "device": "cpu", "fast_dev_run": False}
#: what is checked of every task, in order
TASK_CHECKS = ("one batch", "exact resume", "predict", "export", "serve")
EXTRAS = {"export": ("onnx", "onnxscript", "onnxruntime"), "serve": ("fastapi", "prometheus_client")}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check: its name, ``ok``, ``skipped`` or ``FAILED``, and one line saying what or why."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "FAILED"

    def line(self) -> str:
        took = f" ({self.seconds:.1f} s)" if self.seconds >= 0.05 else ""
        return f"{self.status:<7} {self.name}: {self.detail}{took}"


class Skipped(Exception):
    """A check that cannot run here: an extra is not installed, or what it needs failed before."""


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = "; ".join(lines) or type(exc).__name__
    if not isinstance(exc, (AssertionError, DlguideError, Skipped)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 400 else text[:397] + "..."


# -- what to check ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PluginSource:
    """One entry point of the ``dlguide`` group: of an installed distribution, or declared by a
    project's pyproject.toml."""

    name: str  # the plugin's name, which owns the names of its domain
    value: str  # "package.module" or "package.module:attr"
    distribution: str
    version: str
    #: why the entry point is wrong though it loads (a stale install); None when it is right
    problem: str | None = None
    #: what the ok line adds (a project not installed)
    note: str = ""

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> object:
        obj: Any = importlib.import_module(self.module)
        for part in filter(None, self.value.partition(":")[2].strip().split(".")):
            obj = getattr(obj, part)
        return obj


def _installed() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)}


def resolve(name_or_path: str | Path | None) -> list[PluginSource]:
    """The entry points to check: an installed plugin's, or those a project folder declares."""
    text = "." if name_or_path is None else str(name_or_path)
    path = Path(text).parent if Path(text).name == "pyproject.toml" else Path(text)
    a_path = os.sep in text or "/" in text or text.startswith(".")  # else a name, unless a project is there
    if (path / "pyproject.toml").is_file() or (a_path and path.is_dir()):
        return _from_project(path)
    if a_path:
        raise UsageError(f"no such plugin project folder: {text}")
    installed = _installed()
    ep = installed.get(text)
    if ep is None:
        hint = did_you_mean(text, installed) or (f"; installed plugins: {', '.join(installed)}" if installed
                                                 else "; no dlguide plugin is installed")
        raise UsageError(f"unknown plugin {text!r}{hint}")
    dist = ep.dist
    return [PluginSource(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "-")]


def _from_project(folder: Path) -> list[PluginSource]:
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        installed = ", ".join(_installed()) or "none"
        raise UsageError(f"{folder.resolve()} holds no pyproject.toml: give a plugin project folder or an installed "
                         f"plugin's name (installed: {installed})")
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{pyproject} is not valid TOML: {exc}") from None
    declared = dict(project.get("entry-points", {}).get(GROUP, {}))
    if not declared:
        raise UsageError(f"{pyproject} declares no [project.entry-points.{GROUP}]; add one, e.g. "
                         'mydomain = "dlguide_mydomain.plugin"')
    dist_name = str(project.get("name", folder.resolve().name))
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        note = (f"{dist_name} is not installed: loaded from the import path; dlguide finds it once installed "
                f"(pip install -e {folder})")
        version = str(project.get("version", "-"))
        return [PluginSource(name, value, dist_name, version, note=note) for name, value in declared.items()]
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == GROUP}
    problem = None
    if installed != declared:
        problem = (f"the installed {dist_name} {dist.version} declares {installed or 'no entry points'}, "
                   f"pyproject.toml {declared}: reinstall it (pip install -e {folder})")
    return [PluginSource(name, value, dist_name, dist.version, problem) for name, value in declared.items()]


# -- the checks ---------------------------------------------------------------------------------
class _Recorder:
    """Runs each check, timing it and turning any failure into its one line."""

    def __init__(self, report: Callable[[CheckResult], None] | None) -> None:
        self.results: list[CheckResult] = []
        self.report = report

    def __call__(self, name: str, check: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            status, detail = "ok", check()
        except Skipped as exc:
            status, detail = "skipped", _one_line(exc)
        except (Exception, SystemExit) as exc:  # whatever a plugin does wrong is a failed check, not a crash
            status, detail = "FAILED", _one_line(exc)
        task = name.partition(": ")[0]  # a task's check: its name leads the line once, not twice
        result = CheckResult(name, status, detail.removeprefix(f"{task}: "), time.perf_counter() - started)
        self.results.append(result)
        if self.report is not None:
            self.report(result)
        return status == "ok"


def check_plugin(name_or_path: str | Path | None, *, out: str | Path | None = None, runtime: Runtime | None = None,
                 report: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run the conformance suite on an installed plugin (its entry-point name) or a plugin project
    folder (default: the current one); ``report`` sees each result as it comes. The task checks
    run in ``runtime`` (default: one holding only this plugin), their runs in ``out`` (default:
    a temporary folder, removed at the end). Raises UsageError for an unknown plugin."""
    sources = resolve(name_or_path)
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new folder for the check's runs")
    record = _Recorder(report)
    with _folder(out) as root:
        for source in sources:
            _check_source(source, root / source.name if len(sources) > 1 else root, runtime, record)
    return record.results


@contextlib.contextmanager
def _folder(out: str | Path | None) -> Iterator[Path]:
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="dlguide-check-") as folder:
        yield Path(folder)


def _check_source(source: PluginSource, root: Path, runtime: Runtime | None, record: _Recorder) -> None:
    loaded: list[object] = []

    def entry_point() -> str:
        loaded.append(source.load())
        if source.problem:  # it loads, so the other checks still run
            raise AssertionError(source.problem)
        where = f"{source.name} = {source.value} ({source.distribution} {source.version})"
        return f"{where}; {source.note}" if source.note else where

    record("entry point", entry_point)
    if not loaded:
        return
    plugin = loaded[0]
    hooks_ok = record("hooks", lambda: _hooks(plugin))
    broken: set[str] = set()  # tasks whose target does not import: reported, not run
    own = _registry_of(source.name, plugin)
    record("registrations", lambda: _registrations(own, broken))
    registered = not isinstance(own, BaseException)
    record("no torch at import", lambda: _torch_free(source.module))
    if registered and hooks_ok:
        _check_tasks(source.name, plugin, root, runtime, record, broken)
    elif registered:  # pluggy refuses to register the plugin: nothing of it can run
        record("tasks", _skip("not run: the plugin cannot be registered until its hooks are fixed"))


def _torch_free(module: str) -> str:
    from dlguide._checks import check_torch_free

    check_torch_free(module)
    return f"importing {module} leaves torch unimported"


def _hooks(plugin: object) -> str:
    from dlguide._checks import check_hooks

    names = check_hooks(plugin)
    unmarked = sorted(a for a in dir(plugin) if a.startswith("dlguide_") and callable(getattr(plugin, a))
                      and a not in names)
    if unmarked:  # pluggy passes over a function without the marker: the hook would never be called
        raise AssertionError(f"{', '.join(unmarked)} lack(s) the @dlguide.hookimpl marker: pluggy never calls them")
    if not names:
        raise AssertionError("implements no dlguide hook (dlguide_register registers its tasks)")
    return ", ".join(names)


def _registry_of(name: str, plugin: object) -> Any:
    """What ``plugin`` registers, in a registry of its own, or the exception its ``dlguide_register`` raised."""
    from dlguide._registry import Registry

    own = Registry()
    own.owner = name
    try:
        if hasattr(plugin, "dlguide_register"):
            plugin.dlguide_register(registry=own)
    except (Exception, SystemExit) as exc:
        return exc
    return own


def _registrations(own: Any, broken: set[str]) -> str:
    """Every target registered imports; the tasks whose target does not are added to ``broken``."""
    from dlguide._registry import KINDS
    from dlguide._task import Task

    if isinstance(own, BaseException):
        raise own
    entries = list(own.entries())
    failures = []
    for entry in entries:
        try:
            target = entry.load()
            if entry.kind == "task" and not (isinstance(target, type) and issubclass(target, Task)):
                raise AssertionError("is not a subclass of dlguide.Task")
            if entry.kind == "task" and entry.config is not None and entry.load_config() is not target.Config:
                raise AssertionError(f"config {entry.config} is not {target.__name__}.Config, which runs use")
        except Exception as exc:  # every target is tried: one line names all that fail
            failures.append(f"{entry.kind} {entry.name} ({entry.target}): {_one_line(exc)}")
            if entry.kind == "task":
                broken.add(entry.name)
    if failures:
        raise AssertionError("; ".join(failures))
    counts = [(kind, sum(e.kind == kind for e in entries)) for kind in KINDS]
    return (", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts) + " import"
            if entries else "registers nothing")


def _fail(exc: BaseException) -> Callable[[], str]:
    def check() -> str:
        raise exc

    return check


def _skip(why: str) -> Callable[[], str]:
    return _fail(Skipped(why))


def _inputs(n: int) -> str:
    return f"{n} reference input{'' if n == 1 else 's'}"


def _check_tasks(name: str, plugin: object, root: Path, runtime: Runtime | None, record: _Recorder,
                 broken: set[str]) -> None:
    from dlguide._plugins import load_runtime, use_runtime

    if runtime is None:
        try:  # this plugin alone: a plugin must not depend on what else happens to be installed
            runtime = load_runtime(strict=True, disable=(), extra={name: plugin}, use_entry_points=False)
        except Exception as exc:
            record("tasks", _fail(exc))
            return
    elif all(info.name != name for info in runtime.plugins):
        record("tasks", _fail(AssertionError(f"the runtime given holds no plugin named {name!r}")))
        return
    with use_runtime(runtime):  # runs inside runs (a GAN's scoring classifier) read the current registry
        for entry in runtime.registry.entries("task"):
            if entry.owner == name and entry.name not in broken:
                _check_task(entry, runtime, root / entry.name, record)


def _missing(extra: str) -> bool:
    return any(importlib.util.find_spec(module) is None for module in EXTRAS[extra])


def _check_task(entry: Any, runtime: Runtime, folder: Path, record: _Recorder) -> None:
    from dlguide import _checks
    from dlguide._runs import run_task

    task = entry.name
    settings = {**(entry.demo or {}), **LIMITS, **(entry.check or {}), **FIXED}
    finished: list[Path] = []  # the uninterrupted run: predicted, exported and served
    predicted: dict[str, Any] = {}

    def one_batch() -> str:
        _checks.smoke_run(task, folder / "one-batch", base=settings, runtime=runtime)
        return "fast_dev_run trained and tested it; its saved weights evaluate to the same test metrics"

    def resume() -> str:
        finished.append(run_task(task, base=settings, out=folder / "uninterrupted", runtime=runtime,
                                 progress="none").run_dir)
        _checks.check_resume(task, folder / "interrupted", finished[0], base=settings, runtime=runtime)
        return ("stopped after epoch 1 of 2 as SIGINT stops a run and resumed, it ends with the weights (bit for "
                "bit) and test metrics of an uninterrupted run")

    def predict() -> str:
        if not finished:
            raise Skipped("needs the uninterrupted run of the resume check")
        loaded, raws, _ = _checks.check_predict(finished[0], runtime=runtime)
        predicted.update(raws=raws, kind=loaded.input_kind)
        return f"the reloaded run predicts {_inputs(len(raws))}, one JSON-safe result each"

    def export() -> str:
        if _missing("export"):
            raise Skipped("install dlguide-core[export]")
        if not predicted:
            raise Skipped("needs a finished run with reference inputs (see predict)")
        _checks.check_export(finished[0], folder / "bundle", runtime=runtime)
        return "onnx and pt2 match eager PyTorch; the bundle predicts with torch and onnxruntime"

    def serve() -> str:
        if _missing("serve"):
            raise Skipped("install dlguide-core[serve]")
        if importlib.util.find_spec("httpx") is None:
            raise Skipped("install httpx: the check serves in process through starlette's test client")
        if not predicted:
            raise Skipped("needs a finished run with reference inputs (see predict)")
        rows = _checks.check_served(finished[0], predicted["raws"], predicted["kind"], folder / "serve",
                                    runtime=runtime)
        return f"POST /predict with {_inputs(len(rows))}: one JSON-safe result each"

    for step, check in zip(TASK_CHECKS, (one_batch, resume, predict, export, serve)):
        record(f"{task}: {step}", check)


# -- the command --------------------------------------------------------------------------------
def add_check_command(plugin_sub: Any) -> argparse.ArgumentParser:
    """Add ``check`` to the ``dlguide plugin`` command group."""
    p = plugin_sub.add_parser(
        "check", help="the conformance suite: entry point, hooks, registrations, no torch at import, and each "
        "task's one-batch run, exact resume, predict, export and serve",
        description="Check a plugin as dlguide uses it; one line per check, exit code 1 when one fails.")
    p.add_argument("plugin", metavar="NAME|PATH", nargs="?",
                   help="an installed plugin's entry-point name, or a plugin project folder (default: the current "
                        "folder)")
    p.add_argument("--out", metavar="DIR", help="keep the check's run directories in this new folder (default: a "
                   "temporary folder)")
    p.set_defaults(handler=cmd_check)
    return p


def cmd_check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    results = check_plugin(args.plugin, out=args.out, report=lambda r: print(r.line(), flush=True))
    failed = sum(r.status == "FAILED" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    print(f"{len(results)} checks: {len(results) - failed - skipped} ok, {skipped} skipped, {failed} failed "
          f"({time.perf_counter() - started:.0f} s)")
    return 1 if failed else 0
