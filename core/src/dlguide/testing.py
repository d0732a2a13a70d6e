"""pytest plugin for plugin authors (installed with dlguide-core, entry point ``pytest11``).

Fixtures (``pytest --fixtures`` lists them with these descriptions):

``dlguide_runtime(*plugins, entry_points=())``
    A Runtime holding only the given plugin modules (or objects) and the named installed
    entry points, made current for the test: other installed plugins cannot interfere.
``dlguide_check_hooks(plugin)``
    Fails when a plugin implements an unknown hook or a hook with arguments the spec lacks.
``dlguide_smoke_run(task, **overrides)``
    Runs a task for one tiny step (``fast_dev_run``) into ``tmp_path`` under
    ``GuardedStrategy``, checks the run directory it leaves, evaluates the saved weights again
    (``dlguide eval``) and predicts the task's reference inputs with the reloaded run; returns
    the run's result.
``dlguide_plugin_check(name_or_path, runtime=None)``
    Runs the conformance suite (``dlguide plugin check``) on an installed plugin's name or a
    plugin project folder, its runs under ``tmp_path``, and fails with the lines of the checks
    that failed; returns every check's result.
``dlguide_distributed_run(task, *sets, processes=2, exact=True, ignore=(), tolerance=1e-5)``
    Runs ``dlguide run TASK`` in one process and in ``processes`` (``--nproc-per-node``, gloo on
    the CPU) with the same settings and checks that the processes wrote one run: one report,
    each epoch once in ``metrics.jsonl``, the same metrics; with ``exact``, the same values
    within ``tolerance`` (keys in ``ignore``, such as timings, aside). Returns both runs' metrics
    and what the distributed run printed on stderr.
    Exact agreement needs a task without batch norm (SyncBatchNorm needs CUDA) and dropout,
    and a training set whose last global batch holds at least one sample per process.

Helpers:

``check_export(run_dir, bundle, formats=("onnx", "pt2"), runtime=None)``
    Exports a finished run, checks the bundle with ``export verify`` (every format within its
    tolerance of eager PyTorch), reloads it with each runtime and predicts its reference inputs
    through the inference path; returns the manifest. A plugin's test of "every task exports".
``served(*paths, folder, runtime=None)``
    A context manager: the ``dlguide serve`` app over runs or bundles, in process (a
    ``starlette.testclient.TestClient``, no port), its metrics in ``folder``.
``check_hooks(plugin)``
    What ``dlguide_check_hooks`` runs, as a plain function.
``run_cli(*args, env=None, timeout=900)``
    ``python -m dlguide ARGS`` in a subprocess, its output captured.
``GuardedStrategy``
    A single-device strategy that wraps the model as a distributed wrapper would and fails the
    run when a task calls the bare network (or any part of it) around the wrapper.

``dlguide plugin check`` runs the same checks (the smoke run, predict, export, serve) without
pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from dlguide._checks import GuardedStrategy, check_export, check_hooks, check_predict, served, smoke_run
from dlguide._conformance import CheckResult, check_plugin
from dlguide._plugins import GROUP, Runtime, load_runtime, use_runtime

__all__ = ["GuardedStrategy", "check_export", "check_hooks", "run_cli", "served"]


@pytest.fixture
def dlguide_runtime() -> Iterator[Callable[..., Runtime]]:
    """``dlguide_runtime(*plugins, entry_points=())``: a Runtime holding only the given plugin
    modules (or objects) and the named installed entry points, loaded strictly (a broken plugin
    fails the test) and current until the test ends."""
    stack = contextlib.ExitStack()

    def make(*plugins: object, entry_points: tuple[str, ...] = ()) -> Runtime:
        extra: dict[str, object] = {}
        for i, plugin in enumerate(plugins):
            extra[getattr(plugin, "__name__", f"plugin{i}")] = plugin
        for name in entry_points:
            matches = [ep for ep in metadata.entry_points(group=GROUP) if ep.name == name]
            if not matches:
                pytest.fail(f"no installed dlguide plugin named {name!r}")
            extra[name] = matches[0].load()
        rt = load_runtime(strict=True, disable=(), extra=extra, use_entry_points=False)
        stack.enter_context(use_runtime(rt))
        return rt

    with stack:
        yield make


@pytest.fixture
def dlguide_check_hooks() -> Callable[[object], list[str]]:
    """``dlguide_check_hooks(plugin)``: fails when the plugin implements an unknown ``dlguide_*``
    hook or a hook with arguments its spec lacks; returns the names of the hooks it implements."""
    return check_hooks


@pytest.fixture
def dlguide_smoke_run(tmp_path: Path) -> Callable[..., Any]:
    """``dlguide_smoke_run(task, **overrides)``: one tiny step of the task (``fast_dev_run``, the
    overrides as ``--set key=value``) under ``GuardedStrategy`` into ``tmp_path``; checks the run
    directory, evaluates the saved weights again and predicts the task's reference inputs with
    the reloaded run (one JSON-safe result each). Returns the run's result."""

    def smoke(task: str, **overrides: Any) -> Any:
        out = tmp_path / task.replace(".", "-")
        result = smoke_run(task, out, overrides=[f"{k}={v}" for k, v in overrides.items()])
        check_predict(out)  # the finished run used as a user would: reloaded without its data
        return result

    return smoke


@pytest.fixture
def dlguide_plugin_check(tmp_path: Path) -> Callable[..., list[CheckResult]]:
    """``dlguide_plugin_check(name_or_path, runtime=None, tasks=())``: the conformance suite of
    ``dlguide plugin check`` on an installed plugin (its entry-point name) or a plugin project
    folder, its runs under ``tmp_path``; fails the test with the line of each check that failed,
    and unless each of ``tasks`` had every task check run (or skipped for want of an extra:
    export, serve). Returns every check's result."""
    from dlguide._conformance import TASK_CHECKS

    def check(name_or_path: str | Path, *, runtime: Runtime | None = None,
              tasks: Sequence[str] = ()) -> list[CheckResult]:
        out = Path(tempfile.mkdtemp(prefix="plugin-check-", dir=tmp_path))  # a new folder per call
        results = check_plugin(name_or_path, out=out, runtime=runtime)
        failed = [r.line() for r in results if not r.ok]
        if failed:
            pytest.fail("\n".join(failed), pytrace=False)
        done = {r.name for r in results if r.status == "ok" or r.detail.startswith("install ")}
        missing = [f"{task}: {step}" for task in tasks for step in TASK_CHECKS if f"{task}: {step}" not in done]
        if missing:
            pytest.fail(f"checks not run: {', '.join(missing)}", pytrace=False)
        return results

    return check


def run_cli(*args: Any, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m dlguide ARGS`` in a subprocess, its output captured; ``timeout`` bounds a hang."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dlguide", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=timeout)


@pytest.fixture
def dlguide_distributed_run(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], dict[str, Any], str]]:
    """``dlguide_distributed_run(task, *sets, processes=2, exact=True, ignore=(), tolerance=1e-5)``:
    ``dlguide run TASK --set SETS`` in one process and in ``processes`` (gloo on the CPU); fails
    unless the processes wrote one run with the metrics of the single process (within
    ``tolerance`` with ``exact``, ``ignore`` keys aside). Returns both runs' final metrics and the
    distributed run's stderr."""
    def compare(task: str, *sets: str, processes: int = 2, exact: bool = True, ignore: Sequence[str] = (),
                tolerance: float = 1e-5) -> tuple[dict[str, Any], dict[str, Any], str]:
        runs: list[dict[str, Any]] = []
        stderr = ""
        for n in (1, processes):
            out = tmp_path / f"{task.replace('.', '-')}-{n}"
            res = run_cli("run", task, "--nproc-per-node", n, "--out", out, "--set", *sets)
            assert res.returncode == 0, f"{task} with {n} processes failed: {res.stderr[-2000:]}"
            if n > 1:
                assert res.stderr.count(f"x {n} processes") == 1, res.stderr  # one process reports
                stderr = res.stderr
            epochs = [json.loads(row)["epoch"] for row in (out / "metrics.jsonl").read_text().splitlines()]
            assert epochs == sorted(set(epochs)), f"{task}: epochs logged {epochs}"  # one writer
            runs.append(json.loads((out / "metrics.json").read_text()))
        one, many = runs
        assert many.keys() == one.keys()
        if exact:
            for key, value in one.items():
                if key in ignore or not isinstance(value, (int, float)):
                    continue
                assert many[key] == pytest.approx(value, abs=tolerance, nan_ok=True), f"{task}: {key} with {processes} processes"
        return one, many, stderr

    return compare
