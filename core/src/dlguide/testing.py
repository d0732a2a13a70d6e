"""pytest plugin for plugin authors (installed with dlguide-core, entry point ``pytest11``).

Fixtures:

``dlguide_runtime(*plugins, entry_points=())``
    A Runtime holding only the given plugin modules (or objects) and the named installed
    entry points, made current for the test: other installed plugins cannot interfere.
``dlguide_check_hooks(plugin)``
    Fails when a plugin implements an unknown hook or a hook with arguments the spec lacks.
``dlguide_smoke_run(task, **overrides)``
    Runs a task for one tiny step (``fast_dev_run``) into ``tmp_path`` under
    ``check_export(run_dir, bundle, formats=("onnx", "pt2"), runtime=None)``
    Exports a finished run, checks the bundle with ``export verify`` (every format within its
    tolerance of eager PyTorch), reloads it with each runtime and predicts its reference inputs
    through the inference path; returns the manifest. A plugin's test of "every task exports".

``served(*paths, folder)``
    A context manager: the ``dlguide serve`` app over runs or bundles, in process (a
    ``starlette.testclient.TestClient``, no port), its metrics in ``folder``.

``GuardedStrategy`` and checks the run directory it leaves.
``dlguide_distributed_run(task, *sets, processes=2, exact=True, ignore=(), tolerance=1e-5)``
    Runs ``dlguide run TASK`` in one process and in ``processes`` (``--nproc-per-node``, gloo on
    the CPU) with the same settings and checks that the processes wrote one run: one report,
    each epoch once in ``metrics.jsonl``, the same metrics; with ``exact``, the same values
    within ``tolerance`` (keys in ``ignore``, such as timings, aside). Returns both runs' metrics
    and what the distributed run printed on stderr.
    Exact agreement needs a task without batch norm (SyncBatchNorm needs CUDA) and dropout,
    and a training set whose last global batch holds at least one sample per process.

``GuardedStrategy``
    A single-device strategy that wraps the model as a distributed wrapper would and fails the
    run when a task calls the bare network (or any part of it) around the wrapper.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from dlguide._plugins import GROUP, Runtime, load_runtime, new_plugin_manager, use_runtime
from dlguide._strategy import SingleDeviceStrategy


class GuardedStrategy(SingleDeviceStrategy):
    """Wraps the model in a ``nn.Module`` that calls it, as DDP does, and fails any forward pass
    of the bare module or of one of its parts that does not go through that wrapper
    (``task.module.generator(z)`` instead of ``task.model(...)``): under DDP such a pass would
    train without synchronised gradients. Tasks that pass under it are ready for DDP."""

    name = "guarded"

    def wrap(self, module: Any, *, automatic_optimization: bool = True) -> Any:
        from torch import nn

        class Wrapper(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.module = inner
                self.depth = 0

            def forward(self, *args: Any, **kwargs: Any) -> Any:
                self.depth += 1
                try:
                    return self.module(*args, **kwargs)
                finally:
                    self.depth -= 1

        wrapper = Wrapper(module.to(self.device))

        def guard(part: nn.Module, args: Any) -> None:
            if wrapper.depth == 0:
                raise AssertionError(f"{type(part).__name__} was called around the wrapped model: call the "
                                     "network through task.model(...)")

        for part in module.modules():
            part.register_forward_pre_hook(guard)
        return wrapper

    def unwrap(self, model: Any) -> Any:
        return model.module


def check_hooks(plugin: object) -> list[str]:
    """Validate ``plugin``'s hook implementations against the specs; return the hook names."""
    from dlguide._plugins import _check_unknown_hooks

    _check_unknown_hooks(plugin, getattr(plugin, "__name__", repr(plugin)))
    pm = new_plugin_manager()
    pm.register(plugin)  # pluggy rejects arguments the spec does not have
    pm.check_pending()
    return sorted(c.name for c in pm.get_hookcallers(plugin) or [])


@pytest.fixture
def dlguide_runtime() -> Iterator[Callable[..., Runtime]]:
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
    return check_hooks


@pytest.fixture
def dlguide_smoke_run(tmp_path: Path) -> Callable[..., Any]:
    from dlguide._runs import run_task

    def smoke(task: str, **overrides: Any) -> Any:
        import tempfile

        from dlguide._inference import predict
        from dlguide._runs import build_task, evaluate_run, load_run

        sets = ["fast_dev_run=true", *(f"{k}={v}" for k, v in overrides.items())]
        out = tmp_path / task.replace(".", "-")
        result = run_task(task, overrides=sets, out=out, progress="none", strategy=GuardedStrategy(device="cpu"))
        for name in ("config.yaml", "metrics.jsonl", "metrics.json", "model.safetensors", "checkpoints/last.ckpt"):
            assert (out / name).is_file(), f"{task}: the run directory lacks {name}"
        # the finished run is used as a user would: reloaded without its data, evaluated, predicted
        evaluated = evaluate_run(out)
        for key, value in result.metrics.items():
            if key.startswith("test/") and isinstance(value, float) and key in evaluated:
                assert evaluated[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), \
                    f"{task}: dlguide eval gives {key}={evaluated[key]}, the run gave {value}"
        loaded = load_run(out)
        try:
            if loaded.reference_from_data:
                data_task = build_task(task, overrides=sets)
                raws = list(data_task.reference_inputs(data_task.build_data(), 2))
            else:
                raws = list(loaded.reference_inputs(None, 2))
        except NotImplementedError:
            pytest.fail(f"{task}: implement Task.reference_inputs (raw inputs from the test split) so that a "
                        "reloaded run can be predicted, exported and served")
        assert raws, f"{task}: reference_inputs gave no input"
        with tempfile.TemporaryDirectory() as folder:
            rows = predict(loaded, raws, out_dir=Path(folder) if loaded.writes_files else None)
            json.dumps(rows)  # JSON-safe, as served
        assert len(rows) == len(raws), f"{task}: {len(rows)} predictions for {len(raws)} inputs"
        return result

    return smoke


def check_export(run_dir: str | Path, bundle: str | Path, formats: Sequence[str] = ("onnx", "pt2"), *,
                 runtime: Runtime | None = None) -> dict[str, Any]:
    """Export ``run_dir`` to ``bundle`` in ``formats``, verify every format against eager PyTorch,
    and predict the reference inputs with each runtime; fails with what went wrong."""
    import tempfile

    from dlguide._export import export_run, load_model, read_reference_inputs, verify_bundle
    from dlguide._inference import predict

    result = export_run(run_dir, bundle, ["safetensors", *formats], runtime=runtime)
    manifest = result.manifest
    for fmt in formats:
        assert fmt in manifest["formats"], f"{manifest['task']}: {fmt} was not written: {result.notes}"
    assert manifest["reference"]["inputs"], f"{manifest['task']}: no reference inputs"
    checks = verify_bundle(bundle, registry_runtime=runtime)
    failed = [c for c in checks if not c.ok]
    assert not failed, f"{manifest['task']}: " + "; ".join(f"{c.runtime}: |diff| {c.max_abs_diff:g} > {c.tolerance:g}"
                                                           f" {c.note}" for c in failed)
    assert {c.runtime.split()[0] for c in checks} >= set(formats)
    for kind in ["torch", *(["onnx"] if "onnx" in formats else [])]:
        loaded = load_model(bundle, runtime=kind, registry_runtime=runtime)
        raws = read_reference_inputs(Path(bundle), manifest)
        with tempfile.TemporaryDirectory() as out:
            rows = predict(loaded.task, raws, out_dir=Path(out) if loaded.task.writes_files else None)
        assert len(rows) == len(raws), f"{manifest['task']} with {kind}: {len(rows)} results for {len(raws)} inputs"
    return manifest


@contextlib.contextmanager
def served(*paths: str | Path, folder: str | Path) -> Iterator[Any]:
    """The server's app over ``paths`` (each served under its folder's name), in this process."""
    from prometheus_client import values
    from starlette.testclient import TestClient

    from dlguide._export import load_model
    from dlguide._serve import ServeSettings
    from dlguide._serve_http import create_app
    from dlguide._serve_metrics import MULTIPROC_ENV

    state = Path(folder)
    (state / "metrics").mkdir(parents=True, exist_ok=True)
    before_env, before_values = os.environ.get(MULTIPROC_ENV), values.ValueClass
    os.environ[MULTIPROC_ENV] = str(state / "metrics")
    try:
        models = {Path(p).resolve().name: load_model(p, name=Path(p).resolve().name) for p in paths}
        settings = ServeSettings(models=[(name, str(Path(p).resolve())) for name, p in zip(models, paths)],
                                 state_dir=str(state), allowed_roots=[str(Path(p).resolve().parent) for p in paths])
        with TestClient(create_app(settings, models)) as client:
            yield client
    finally:
        values.ValueClass = before_values  # the server selects prometheus' multiprocess values
        if before_env is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before_env


def run_cli(*args: Any, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m dlguide ARGS`` in a subprocess, its output captured; ``timeout`` bounds a hang."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dlguide", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=timeout)


@pytest.fixture
def dlguide_distributed_run(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], dict[str, Any], str]]:
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
