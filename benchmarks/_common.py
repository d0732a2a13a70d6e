"""What the benchmark scripts share: running a task with a clock on its training batches, the
machine's description, and writing the JSON figures.

Each script runs as ``python benchmarks/NAME.py``, so this folder is first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from dlguide import hookimpl
from dlguide._plugins import load_runtime
from dlguide._runs import RunResult, run_task

RESULTS = Path(__file__).parent / "results"


class TrainingClock:
    """Seconds spent in training batches and the samples they held, through the public hooks
    (validation, checkpoints and the test pass are not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self._mark = 0.0

    @hookimpl
    def dlguide_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._mark = time.perf_counter()

    @hookimpl
    def dlguide_train_batch_end(self, trainer: Any, batch_idx: int, loss: Any) -> None:
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        self.samples += trainer.last_batch_size

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class TimedRun:
    result: RunResult
    wall_seconds: float
    clock: TrainingClock
    load_average: tuple[float, float]  # 1-minute load average before and after

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics


def plugin_runtime(name: str, plugin: ModuleType) -> Any:
    """A runtime holding only ``plugin`` (no entry points), so other installed plugins cannot slow a run."""
    return load_runtime(strict=True, disable=(), extra={name: plugin}, use_entry_points=False)


def timed_run(task: str, overrides: list[str], out: Path, runtime: Any, progress: str = "log") -> TimedRun:
    """``dlguide run TASK --set OVERRIDES --out OUT`` in this process, timed as a whole and per training batch."""
    clock = TrainingClock()
    runtime.pm.register(clock)
    try:
        before = os.getloadavg()[0]
        started = time.perf_counter()
        result = run_task(task, overrides=overrides, out=out, runtime=runtime, progress=progress)
        wall = time.perf_counter() - started
    finally:
        runtime.pm.unregister(clock)
    return TimedRun(result, wall, clock, (round(before, 2), round(os.getloadavg()[0], 2)))


def environment(**extra: Any) -> dict[str, Any]:
    """The software and machine the figures were measured on."""
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "python": platform.python_version(),
            "machine": platform.machine(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()], **extra}


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {path}")
