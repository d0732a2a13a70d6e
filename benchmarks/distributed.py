"""Distributed training throughput: the same run in 1 and in 2 processes (``dlguide run
--nproc-per-node N``, DDP over gloo on the CPU), alternating, several times; with a GPU, the
same run on one CUDA device under ddp (nccl, one process), fsdp (FSDP2, one process), and the
single-device strategy at 32, bf16 and 16-mixed (grad scaler) precision.

    python benchmarks/distributed.py [--repeats 3] [--epochs 4] [--gpu-only] [--cpu-only]

Throughput is training samples per second over the training batches only (validation,
checkpoints and the test pass are not counted), summed over processes: each process counts
its own batches (``benchmarks/_process_clock.py``) and the run's rate is all samples over the
slowest process's seconds. The wall time of the whole command (start-up, rendezvous, data,
evaluation) is reported beside it. Metrics of the 1- and 2-process runs are compared: the
settings have no dropout, so they agree up to float rounding (two processes add a batch's
gradients in another order; over a few epochs that drifts to about 1e-4).

Caveat: on a machine with 2 cores, two processes share the cores one process would use (each
gets half the threads), so the 2-process figure measures the cost of DDP's synchronisation
rather than a speed-up; a speed-up needs a core (or a device) per process. Saves
benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, environment, save_json

HERE = Path(__file__).parent
CPU_RUNS = {
    # a CNN on 8x8 digits: small convolutions, a batch of 64
    "vision.classify": ["dataset=digits", "batch_size=64", "dropout=0", "scheduler=none"],
    # a wider MLP on 60,000 points: larger matrix products per sample
    "example.sine": ["samples=60000", "hidden=256", "batch_size=256", "dropout=0", "scheduler=none"],
}


def run(task: str, sets: list[str], processes: int, folder: Path, extra_env: dict[str, str] | None = None,
        launcher: list[str] | None = None) -> dict[str, Any]:
    """One timed ``dlguide run`` and what its processes measured."""
    bench = folder / "clock"
    out = folder / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "DLGUIDE_PLUGINS": "_process_clock", "DLGUIDE_BENCH_DIR": str(bench), **(extra_env or {})}
    command = launcher or [sys.executable, "-m", "dlguide", "run", task, "--nproc-per-node", str(processes)]
    started = time.perf_counter()
    res = subprocess.run([*command, "--out", str(out), "--quiet", "--set", *sets], capture_output=True, text=True,
                         env=env, timeout=3600)
    wall = time.perf_counter() - started
    if res.returncode:
        raise SystemExit(f"{task} with {processes} process(es) failed: {res.stderr.strip()[-1500:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(bench.glob("rank*.json"))]
    seconds = max(r["seconds"] for r in ranks)
    samples = sum(r["samples"] for r in ranks)
    return {"samples_per_s": samples / seconds, "train_seconds": seconds, "wall_seconds": wall, "samples": samples,
            "metrics": json.loads((out / "metrics.json").read_text())}


def cpu_comparison(task: str, sets: list[str], repeats: int) -> dict[str, Any]:
    rates: dict[int, list[float]] = {1: [], 2: []}
    walls: dict[int, list[float]] = {1: [], 2: []}
    metrics: dict[int, dict[str, Any]] = {}
    for i in range(repeats):
        for n in ((1, 2) if i % 2 == 0 else (2, 1)):  # which goes first alternates
            with tempfile.TemporaryDirectory() as tmp:
                r = run(task, [*sets, "device=cpu"], n, Path(tmp))
            rates[n].append(r["samples_per_s"])
            walls[n].append(r["wall_seconds"])
            metrics[n] = r["metrics"]
            print(f"  {task} x{n}: {r['samples_per_s']:,.0f} samples/s in training, {r['wall_seconds']:.1f} s in all",
                  flush=True)
    pairs = [two / one for one, two in zip(rates[1], rates[2])]
    differences = {k: abs(metrics[2][k] - v) for k, v in metrics[1].items() if isinstance(v, (int, float))}
    return {
        "settings": sets,
        "samples_per_s": {str(n): statistics.median(v) for n, v in rates.items()},
        "wall_seconds": {str(n): statistics.median(v) for n, v in walls.items()},
        "ratio_2_over_1": statistics.median(pairs),
        "ratio_per_repeat": [round(p, 4) for p in pairs],
        "largest_metric_difference": max(differences.values()),
    }


def gpu_checks(epochs: int) -> dict[str, Any]:
    """One CUDA device: nccl and FSDP2 in one process (torchrun), and the precisions."""
    sets = [*CPU_RUNS["vision.classify"], f"epochs={epochs}", "device=cuda"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                "-m", "dlguide", "run", "vision.classify"]
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    cases = {
        "single-32": (None, ["precision=32"]),
        "single-bf16": (None, ["precision=bf16"]),
        "single-16-mixed": (None, ["precision=16-mixed"]),
        "ddp-nccl-32": (torchrun, ["strategy=ddp", "precision=32"]),
        "fsdp-32": (torchrun, ["strategy=fsdp", "precision=32"]),
        "fsdp-bf16": (torchrun, ["strategy=fsdp", "precision=bf16"]),
    }
    for name, (launcher, extra) in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            r = run("vision.classify", [*sets, *extra], 1, Path(tmp), launcher=launcher)
        out[name] = {k: r[k] for k in ("samples_per_s", "wall_seconds")}
        out[name]["test/accuracy"] = r["metrics"].get("test/accuracy")
        out[name]["test/loss"] = r["metrics"].get("test/loss")
        print(f"  {name}: {r['samples_per_s']:,.0f} samples/s, test/accuracy {out[name]['test/accuracy']:.4f}",
              flush=True)
    reference = out["single-32"]["test/loss"]
    out["ddp_vs_single_test_loss_difference"] = abs(out["ddp-nccl-32"]["test/loss"] - reference)
    out["fsdp_vs_single_test_loss_difference"] = abs(out["fsdp-32"]["test/loss"] - reference)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join(["python", "benchmarks/distributed.py", *sys.argv[1:]]),
                               "cpu": {}, "gpu": None}
    if not args.gpu_only:
        for task, sets in CPU_RUNS.items():
            print(f"{task}: 1 vs 2 processes on the CPU ({args.repeats} repeats)", flush=True)
            results["cpu"][task] = cpu_comparison(task, [*sets, f"epochs={args.epochs}"], args.repeats)
    if not args.cpu_only:
        if torch.cuda.is_available():
            print("GPU: nccl and FSDP2 in one process, precisions", flush=True)
            results["gpu"] = gpu_checks(args.epochs)
        else:
            results["gpu"] = "not measured: torch sees no CUDA device on this machine"
    results["environment"] = environment()
    print()
    for task, r in results["cpu"].items():
        one, two = r["samples_per_s"]["1"], r["samples_per_s"]["2"]
        print(f"{task:16s} 1 process {one:10,.0f}/s  2 processes {two:10,.0f}/s  ratio {r['ratio_2_over_1']:.3f}  "
              f"largest metric difference {r['largest_metric_difference']:.2e}")
    if isinstance(results["gpu"], str):
        print(f"GPU: {results['gpu']}")
    save_json(RESULTS / "distributed.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
