"""Tuning: TPE with median pruning against random search without pruning, on vision.classify
(sklearn's digits), with the same number of trials and the same seeds: the best validation
accuracy each finds and the training epochs it spends. Saves benchmarks/results/tuning.json.

    python benchmarks/tuning.py [--trials 20] [--epochs 10] [--seeds 0 1 2]

Both searches are ``dlguide tune vision.classify --space SPACE --set epochs=E`` run in this
process (the vision plugin alone), each study in a temporary folder with its own SQLite file:

- ``tpe_median``: ``--sampler tpe --pruner median`` (5 random startup trials, then TPE; a
  trial is judged against the median of the completed ones from its second epoch on);
- ``random``: ``--sampler random --pruner none`` (every trial trains all E epochs).

The space (SPACE below) spans a learning rate over three decades, the hidden layer's width,
dropout and the optimizer, so that some draws train poorly: what pruning is for. Epochs are
counted from each trial's reports (a pruned trial's epochs up to its stop). The target: over
the seeds, TPE with pruning finds a best validation accuracy at least as high as random
search's (on average) in at least 30% fewer epochs. Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dlguide_vision.plugin
from _common import RESULTS, environment, plugin_runtime, save_json

from dlguide._tune import tune

SPACE = """\
lr: {loguniform: [1.0e-4, 1.0e-1]}
hidden: {int: [16, 256], log: true}
dropout: {uniform: [0.0, 0.5]}
optimizer: {choice: [adam, sgd, rmsprop]}
"""
ARMS = {
    "tpe_median": {"sampler": "tpe", "pruner": "median"},
    "random": {"sampler": "random", "pruner": "none"},
}
FEWER_EPOCHS = 0.30  # the target's saving


def search(arm: str, seed: int, trials: int, epochs: int, folder: Path, runtime: Any) -> dict[str, Any]:
    """One study of one arm; its best value, epochs spent and states."""
    space = folder / "space.yaml"
    space.write_text(SPACE)
    started = time.perf_counter()
    result = tune("vision.classify", space, runtime=runtime, trials=trials, seed=seed, out=folder / f"{arm}-{seed}",
                  overrides=[f"epochs={epochs}"], quiet=True, **ARMS[arm])
    wall = time.perf_counter() - started
    assert result.best is not None, f"{arm} seed {seed}: no trial completed"
    states = [row["state"] for row in result.trials]
    return {"seed": seed, "best_val_accuracy": round(result.best["value"], 4), "best_params": result.best["params"],
            "epochs": sum(row["epochs"] for row in result.trials), "trials": len(result.trials),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"), "wall_seconds": round(wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per study")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of a trial that is not pruned")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one study per arm and seed")
    parser.add_argument("--out", default=str(RESULTS / "tuning.json"))
    args = parser.parse_args()
    runtime = plugin_runtime("vision", dlguide_vision.plugin)
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm in ARMS:
                r = search(arm, seed, args.trials, args.epochs, Path(tmp), runtime)
                arms[arm].append(r)
                print(f"{arm:<10} seed {seed}: best val/accuracy {r['best_val_accuracy']:.4f} after {r['epochs']} "
                      f"epochs ({r['pruned']} of {r['trials']} trials pruned, {r['wall_seconds']:.0f} s)", flush=True)
    summary = {arm: {"mean_best_val_accuracy": round(statistics.mean(r["best_val_accuracy"] for r in runs), 4),
                     "epochs": sum(r["epochs"] for r in runs),
                     "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1)} for arm, runs in arms.items()}
    tpe, rnd = summary["tpe_median"], summary["random"]
    saved = 1 - tpe["epochs"] / rnd["epochs"]
    passed = tpe["mean_best_val_accuracy"] >= rnd["mean_best_val_accuracy"] and saved >= FEWER_EPOCHS
    print(f"TPE + median pruning: mean best {tpe['mean_best_val_accuracy']:.4f} in {tpe['epochs']} epochs; random "
          f"search: {rnd['mean_best_val_accuracy']:.4f} in {rnd['epochs']} epochs; {saved:.0%} fewer epochs -> "
          f"{'PASS' if passed else 'FAIL'} (same or better best value with >= {FEWER_EPOCHS:.0%} fewer epochs)")
    save_json(Path(args.out), {
        "task": "vision.classify", "dataset": "digits", "space": SPACE, "trials": args.trials,
        "epochs_per_trial": args.epochs, "seeds": args.seeds, "arms": ARMS, "studies": arms, "summary": summary,
        "fewer_epochs": round(saved, 3),
        "target": f"tpe_median's mean best val/accuracy >= random's, with >= {FEWER_EPOCHS:.0%} fewer epochs",
        "passed": passed, "environment": environment()})
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
