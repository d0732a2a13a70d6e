"""Faults: kill -9 at random moments and a signal at every stage of a run, for each task, each
followed by ``dlguide resume`` until the run ends; the result is compared with an uninterrupted
run of the same settings.

    python benchmarks/faults.py [--tasks example.sine vision.classify] [--kills 20] [--seed 0]

For each task: one uninterrupted run (its wall time sets the window for the kills); ``--kills``
runs killed with SIGKILL at a uniformly random moment of that window (inside data loading,
training, validation, checkpoint writes, the test pass: wherever it lands); and one run per
stage stopped with SIGTERM there: the start of the run, and in the last epoch its start, after
its first batches, its last batch, its end (after validation); plus a SIGKILL right after the
last epoch's checkpoint (before the test pass and the weights). Checkpoints are written every epoch (``checkpoint_interval=0``), so the kills fall
on checkpoint writes too.

Printed per task: how many runs resumed to the end, how many ended exactly as the
uninterrupted run (every metric within 1e-6 and every weight equal), stray temporary files
left in the run directory, and runs stranded (a resume that failed). Target: all resumed, all
exact, none stranded, nothing left behind. Saves benchmarks/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, environment, load_json, save_json
from safetensors.torch import load_file

HERE = Path(__file__).parent
TASKS = {
    "example.sine": ["samples=4096", "hidden=32", "dropout=0", "epochs=4"],
    "vision.classify": ["dataset=digits", "epochs=3", "batch_size=64"],
    "nlp.classify": ["model=gru", "epochs=2", "limit_train_batches=20", "embedding_dim=16", "hidden_size=16",
                     "max_length=24", "batch_size=32"],
    "recsys.rank": ["model=mf", "epochs=3"],
    "medical.segment": ["epochs=2", "limit_train_batches=2", "batch_size=2", "samples_per_volume=2",
                        "patch_size=[16,16,16]", "channels=[8,16]", "sw_batch_size=8", "synthetic_cases=6",
                        "synthetic_size=32"],
    "medical.classify": ["epochs=2", "limit_train_batches=2", "batch_size=8", "image_size=32",
                         "synthetic_per_class=10"],
    "vision.gan": ["epochs=2", "limit_train_batches=4", "batch_size=16", "classifier_epochs=2",
                   "quality_samples=100"],
}
STAGES = ["run_start", "epoch_start", "first_batches", "last_batch", "epoch_end", "checkpoint_saved"]


def dlguide(*args: Any, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dlguide", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def finish(out: Path, task: str, sets: list[str]) -> tuple[bool, int, str]:
    """Resume until the run ends (or start it again when it never made its directory); returns
    whether it ended, how many commands that took, and the last error line."""
    error = ""
    for attempt in range(1, 4):
        if (out / "metrics.json").is_file() and (out / "model.safetensors").is_file():
            return True, attempt - 1, error
        args = ["resume", out, "--quiet"] if (out / "config.yaml").is_file() else ["run", task, "--out", out,
                                                                                   "--quiet", "--set", *sets]
        proc = dlguide(*args)
        _, err = proc.communicate(timeout=3600)
        if proc.returncode:
            error = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
    return (out / "metrics.json").is_file(), 3, error


def compare(out: Path, reference: Path) -> bool:
    a, b = json.loads((out / "metrics.json").read_text()), json.loads((reference / "metrics.json").read_text())
    same = all(isinstance(v, str) or abs(a.get(k, float("inf")) - v) <= 1e-6 for k, v in b.items()
               if not k.endswith("seconds"))
    wa, wb = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    return same and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def stray(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp"))


def trial(name: str, task: str, sets: list[str], folder: Path, reference: Path, *, kill_after: float | None = None,
          stage: str | None = None, last_epoch: int = 1) -> dict[str, Any]:
    out = folder / name
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    if stage is not None:
        env.update({"DLGUIDE_PLUGINS": "_fault_plugin", "FAULT_STAGE": stage,
                    "FAULT_EPOCH": "1" if stage == "run_start" else str(last_epoch),
                    "FAULT_ONCE": str(folder / f"{name}.fired")})
        if stage == "checkpoint_saved":  # after the last epoch's checkpoint a SIGTERM has nothing left to stop
            env["FAULT_SIGNAL"] = str(int(signal.SIGKILL))
    proc = dlguide("run", task, "--out", out, "--quiet", "--set", *sets, env=env)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=3600)
    interrupted = proc.returncode != 0
    ended, commands, error = finish(out, task, sets)
    return {"name": name, "interrupted": interrupted, "resumed": ended, "resume_commands": commands,
            "exact": ended and compare(out, reference), "stray": stray(out) if out.exists() else [],
            "error": error}


def run_task_faults(task: str, kills: int, rng: random.Random, folder: Path) -> dict[str, Any]:
    sets = [*TASKS[task], "checkpoint_interval=0", "seed=0"]
    reference = folder / "reference"
    started = time.perf_counter()
    ref = dlguide("run", task, "--out", reference, "--quiet", "--set", *sets)
    _, err = ref.communicate(timeout=3600)
    window = time.perf_counter() - started
    if ref.returncode:
        raise SystemExit(f"{task}: the uninterrupted run failed: {err.strip()[-500:]}")
    epochs = int(next(s for s in sets if s.startswith("epochs=")).split("=")[1])
    trials = [trial(f"kill{i:02d}", task, sets, folder, reference, kill_after=rng.uniform(0.2, window))
              for i in range(kills)]
    trials += [trial(f"term-{stage}", task, sets, folder, reference, stage=stage, last_epoch=epochs)
               for stage in STAGES]
    for t in trials:
        mark = "ok" if t["resumed"] and t["exact"] and not t["stray"] else "FAIL"
        print(f"  {task} {t['name']:22s} interrupted={t['interrupted']!s:5s} resumed={t['resumed']!s:5s} "
              f"exact={t['exact']!s:5s} stray={len(t['stray'])} {mark} {t['error']}", flush=True)
    return {
        "settings": sets, "uninterrupted_seconds": round(window, 2), "trials": trials,
        "runs": len(trials), "interrupted": sum(t["interrupted"] for t in trials),
        "resumed": sum(t["resumed"] for t in trials), "exact": sum(t["exact"] for t in trials),
        "stray_files": sum(len(t["stray"]) for t in trials), "stranded": sum(not t["resumed"] for t in trials),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["example.sine", "vision.classify"], choices=sorted(TASKS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"command": " ".join(["python", "benchmarks/faults.py", *sys.argv[1:]]), "tasks": {}}
    failed = False
    for task in args.tasks:
        print(f"{task}: {args.kills} kills at random moments, SIGTERM at {len(STAGES)} stages", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            r = run_task_faults(task, args.kills, rng, Path(tmp))
        r["command"] = results["command"]
        results["tasks"][task] = r
        print(f"{task:16s} runs {r['runs']}  interrupted {r['interrupted']}  resumed {r['resumed']}  exact {r['exact']}  "
              f"stray files {r['stray_files']}  stranded {r['stranded']}", flush=True)
        failed |= r["resumed"] != r["runs"] or r["exact"] != r["runs"] or r["stray_files"] > 0
        save(results)  # after each task: a long command stopped early keeps what it measured
    return 1 if failed else 0


def save(results: dict[str, Any]) -> None:
    """Write the results, keeping the tasks that earlier commands measured (each names its command)."""
    earlier = load_json(RESULTS / "faults.json")
    merged = {**results, "tasks": dict(results["tasks"]), "environment": environment()}
    for task, r in earlier.get("tasks", {}).items():
        if task not in merged["tasks"]:
            r.setdefault("command", earlier.get("command", ""))
            merged["tasks"][task] = r
    save_json(RESULTS / "faults.json", merged)


if __name__ == "__main__":
    sys.exit(main())
