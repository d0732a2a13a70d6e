"""What every task must do, checked: the functions behind ``dlguide.testing``'s fixtures and
``dlguide plugin check``, so that a plugin's own tests and the conformance suite check the same
things. They need no pytest: each fails with an ``AssertionError`` whose message is one line
naming the task and what went wrong.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlguide._errors import RunInterrupted
from dlguide._inference import RawInput, predict
from dlguide._plugins import Runtime, new_plugin_manager
from dlguide._rundir import RunDir
from dlguide._runs import RunResult, build_task, evaluate_run, load_run, resume_run, run_task
from dlguide._strategy import SingleDeviceStrategy
from dlguide.hookspecs import hookimpl

#: what the directory of every finished run holds
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.json", "model.safetensors", "checkpoints/last.ckpt")


def require(condition: object, message: str) -> None:
    """An ``assert`` that ``python -O`` keeps: the conformance suite also runs outside pytest."""
    if not condition:
        raise AssertionError(message)


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


# the first import of torch leaves the stack of modules that led to it; the spy notes them
_PROBE = """
import importlib, json, sys
chain = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not chain:
            frame = sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if not module.startswith(("importlib", "_frozen_importlib", "__main__")) and module not in chain:
                    chain.append(module)
                frame = frame.f_back
        return None
sys.meta_path.insert(0, Spy())
importlib.import_module(sys.argv[1])
print(json.dumps({"torch": "torch" in sys.modules, "chain": chain[::-1]}))
"""


def check_torch_free(module: str) -> None:
    """Import ``module`` in a fresh interpreter and fail, naming the chain of imports, when that
    imports torch (a plugin module must not: ``dlguide list`` and ``--help`` import it)."""
    # the import path of this process, so a plugin found here (not installed, a test's) is found there
    path = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssertionError(f"importing {module} in a fresh interpreter failed: {last}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["torch"]:
        via = " -> ".join([*found["chain"], "torch"]) if found["chain"] else "torch"
        raise AssertionError(f"importing {module} imports torch ({via}); import it inside the functions that "
                             "need it, so that dlguide list and --help stay fast")


def _same_number(a: Any, b: Any, *, rel: float = 0.0, abs_: float = 1e-6) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def smoke_run(task: str, out: Path, *, base: Mapping[str, Any] | None = None, overrides: Iterable[str] = (),
              runtime: Runtime | None = None) -> RunResult:
    """Train ``task`` for one batch (``fast_dev_run``) under :class:`GuardedStrategy` into ``out``,
    check its run directory, and check that ``dlguide eval`` of the saved weights, without the
    run's state in memory, gives the test metrics the run gave."""
    result = run_task(task, base=base, overrides=["fast_dev_run=true", *overrides], out=out, runtime=runtime,
                      progress="none", strategy=GuardedStrategy(device="cpu"))
    for name in RUN_FILES:
        require((out / name).is_file(), f"{task}: the run directory lacks {name}")
    evaluated = evaluate_run(out, runtime=runtime)
    for key, value in result.metrics.items():
        if key.startswith("test/") and isinstance(value, float) and key in evaluated:
            require(_same_number(evaluated[key], value, rel=1e-4),
                    f"{task}: dlguide eval gives {key}={evaluated[key]}, the run gave {value}")
    return result


def reference_inputs(run_dir: str | Path, count: int = 2, *,
                     runtime: Runtime | None = None) -> tuple[Any, list[RawInput]]:
    """A finished run's task reloaded as a user loads it (its training data unread), and ``count``
    of its reference inputs (taken from the run's data when the task needs them)."""
    loaded = load_run(run_dir, runtime=runtime)
    try:
        if loaded.reference_from_data:
            name, saved = RunDir(run_dir).read_config()
            data_task = build_task(name, base=saved, runtime=runtime)
            raws = list(data_task.reference_inputs(data_task.build_data(), count))
        else:
            raws = list(loaded.reference_inputs(None, count))
    except NotImplementedError:
        raise AssertionError(f"{loaded.name}: implement Task.reference_inputs (raw inputs from the test split) so "
                             "that a reloaded run can be predicted, exported and served") from None
    require(raws, f"{loaded.name}: reference_inputs gave no input")
    return loaded, raws


def check_rows(task: str, rows: Any, inputs: Sequence[Any], where: str = "") -> None:
    """One JSON-safe dict per input, as the server sends them (no NaN: JSON has none)."""
    require(isinstance(rows, list) and len(rows) == len(inputs),
            f"{task}{where}: {len(rows) if isinstance(rows, list) else rows!r} results for {len(inputs)} inputs")
    for i, row in enumerate(rows):
        require(isinstance(row, dict), f"{task}{where}: result {i} is a {type(row).__name__}, not a dict")
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{task}{where}: result {i} is not JSON-safe: {exc}") from None


def check_predict(run_dir: str | Path, count: int = 2, *,
                  runtime: Runtime | None = None) -> tuple[Any, list[RawInput], list[dict[str, Any]]]:
    """Reload a finished run and predict ``count`` reference inputs through the inference path;
    returns the loaded task, the inputs and their results (one JSON-safe dict each)."""
    loaded, raws = reference_inputs(run_dir, count, runtime=runtime)
    with tempfile.TemporaryDirectory() as folder:
        rows = predict(loaded, raws, out_dir=Path(folder) if loaded.writes_files else None)
    check_rows(loaded.name, rows, raws)
    return loaded, raws, rows


class StopAfterEpoch:
    """A run's hook object that stops it at the end of epoch ``epoch`` as SIGINT does: a
    checkpoint of that moment, then ``RunInterrupted``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    @hookimpl
    def dlguide_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == self.epoch:
            # what the Trainer's SIGINT handler records; a real signal reaches only the main thread
            trainer._stop_signal = signal.SIGINT


def check_resume(task: str, out: Path, reference: Path, *, base: Mapping[str, Any] | None = None,
                 runtime: Runtime | None = None) -> None:
    """Run ``task`` with ``base`` into ``out``, stop it after its first epoch as SIGINT does, resume
    it, and check that it ends as ``reference`` (the same settings, never stopped) did: the same
    weights bit for bit and the same test metrics."""
    try:
        run_task(task, base=base, out=out, runtime=runtime, progress="none",
                 plugins={"dlguide.stop-after-epoch": StopAfterEpoch(1)})
    except RunInterrupted:
        pass
    else:
        raise AssertionError(f"{task}: the run was not stopped after its first epoch")
    resume_run(out, runtime=runtime, progress="none")
    same_run(task, out, reference)


def same_run(task: str, run: Path, reference: Path) -> None:
    """``run`` ended with ``reference``'s weights, bit for bit, and its test metrics."""
    import torch
    from safetensors.torch import load_file

    hint = ("state the checkpoint does not hold (a random generator or a counter of the task's own) "
            "changes the run after a resume")
    got, want = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    differ = [k for k in want if k not in got or got[k].shape != want[k].shape or not torch.equal(got[k], want[k])]
    if differ or got.keys() != want.keys():
        first = (differ or sorted(got.keys() ^ want.keys()))[0]
        gap = ""
        if first in got and first in want and got[first].shape == want[first].shape:
            gap = f", max |diff| {float((got[first].double() - want[first].double()).abs().max()):.3g}"
        raise AssertionError(f"{task}: the resumed run's weights differ from an uninterrupted run's ({len(differ)} of "
                             f"{len(want)} tensors, first {first}{gap}): {hint}")
    got_metrics, want_metrics = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    for key, value in want_metrics.items():
        if key.startswith("test/") and isinstance(value, (int, float)):
            require(_same_number(got_metrics.get(key), value),
                    f"{task}: the resumed run gives {key}={got_metrics.get(key)}, an uninterrupted one {value}, "
                    "with the same weights: the test pass draws from a source the seed does not set")


def check_export(run_dir: str | Path, bundle: str | Path, formats: Sequence[str] = ("onnx", "pt2"), *,
                 runtime: Runtime | None = None) -> dict[str, Any]:
    """Export ``run_dir`` to ``bundle`` in ``formats``, verify every format against eager PyTorch,
    and predict the reference inputs with each runtime; fails with what went wrong."""
    from dlguide._export import export_run, load_model, read_reference_inputs, verify_bundle

    result = export_run(run_dir, bundle, ["safetensors", *formats], runtime=runtime)
    manifest = result.manifest
    for fmt in formats:
        require(fmt in manifest["formats"], f"{manifest['task']}: {fmt} was not written: {result.notes}")
    require(manifest["reference"]["inputs"], f"{manifest['task']}: no reference inputs")
    checks = verify_bundle(bundle, registry_runtime=runtime)
    failed = [c for c in checks if not c.ok]
    require(not failed, f"{manifest['task']}: " + "; ".join(f"{c.runtime}: |diff| {c.max_abs_diff:g} > "
                                                            f"{c.tolerance:g} {c.note}" for c in failed))
    require({c.runtime.split()[0] for c in checks} >= set(formats),
            f"{manifest['task']}: verify checked {sorted(c.runtime for c in checks)}, not every one of {list(formats)}")
    for kind in ["torch", *(["onnx"] if "onnx" in formats else [])]:
        loaded = load_model(bundle, runtime=kind, registry_runtime=runtime)
        raws = read_reference_inputs(Path(bundle), manifest)
        with tempfile.TemporaryDirectory() as out:
            rows = predict(loaded.task, raws, out_dir=Path(out) if loaded.task.writes_files else None)
        check_rows(manifest["task"], rows, raws, f" with {kind}")
    return manifest


@contextlib.contextmanager
def served(*paths: str | Path, folder: str | Path, runtime: Runtime | None = None) -> Iterator[Any]:
    """The server's app over ``paths`` (each served under its folder's name), in this process:
    a ``starlette.testclient.TestClient`` (no port), its metrics in ``folder``; ``runtime`` is
    the registry the models' tasks come from (default: the current one)."""
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
        models = {Path(p).resolve().name: load_model(p, name=Path(p).resolve().name, registry_runtime=runtime)
                  for p in paths}
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


def request_input(raw: RawInput, kind: str) -> Any:
    """One input as a client puts it in ``{"inputs": [...]}``: a file's bytes in base64, a text, a JSON value."""
    if kind == "file":
        name = raw.name or (raw.path.name if raw.path is not None else "input")
        return {"b64": base64.b64encode(raw.data()).decode("ascii"), "filename": name}
    return raw.text() if kind == "text" else raw.value


def check_served(run_dir: str | Path, inputs: Sequence[RawInput], input_kind: str, folder: str | Path, *,
                 runtime: Runtime | None = None, ready_s: float = 120.0) -> list[dict[str, Any]]:
    """Serve a finished run in this process and predict ``inputs`` over HTTP; one JSON result each."""
    name = RunDir(run_dir).read_config()[0]
    with served(run_dir, folder=folder, runtime=runtime) as client:
        deadline = time.monotonic() + ready_s
        while client.get("/readyz").status_code != 200:  # loaded and warmed with one prediction
            require(time.monotonic() < deadline, f"{name}: the server was not ready after {ready_s:.0f} s")
            time.sleep(0.1)
        answer = client.post("/predict", json={"inputs": [request_input(raw, input_kind) for raw in inputs]})
    body = answer.json()
    require(answer.status_code == 200, f"{name}: the server answered {answer.status_code}: {body.get('error', body)}")
    check_rows(name, body.get("predictions"), inputs, " served")
    return body["predictions"]
