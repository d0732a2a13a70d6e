"""recsys.rank on ml-100k: every model under one split and protocol, in one table.

    python benchmarks/recsys.py                      # every row (minutes on two CPU cores)
    python benchmarks/recsys.py --models mf als      # a subset, merged into the saved table

Protocol (the task's defaults): every rating is a positive; random per-user 80/10/10 split,
seed 42; full ranking of all 1,682 items with the user's training (and validation) items
excluded; k = 10; each model's best epoch by validation NDCG@10 is tested. Each run is a
plain ``dlguide run recsys.rank --set model=... <settings>`` into a temporary directory.
"Train s" counts the training steps only (implicit's fit for ALS/BPR, counting for
popularity); "wall s" the whole run with per-epoch validation and checkpoints.

Targets: every learned model beats popularity; the best deep model's NDCG@10 is at least
ALS's; the best model reaches recall@10 >= 0.25 and NDCG@10 >= 0.29. Figures are printed and
written to benchmarks/results/recsys.json; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import dlguide_recsys.plugin
from _common import RESULTS, environment, load_json, plugin_runtime, save_json, timed_run

# settings chosen on the validation split (val/ndcg@10), never on the test figures; each row
# is a model= and its settings ("mf-softmax" is mf trained with the whole-catalogue softmax loss)
SETTINGS: dict[str, list[str]] = {
    "popularity": ["model=popularity", "epochs=1"],
    "als": ["model=als", "epochs=20", "embedding_dim=32", "als_alpha=2", "regularization=5"],
    "bpr": ["model=bpr", "epochs=100", "embedding_dim=64", "bpr_learning_rate=0.01", "regularization=0.01"],
    "mf": ["model=mf", "epochs=80", "embedding_dim=64", "num_negatives=4", "lr=5e-3", "weight_decay=3e-5",
           "early_stopping_patience=4"],
    "mf-softmax": ["model=mf", "loss=softmax", "epochs=60", "embedding_dim=64", "lr=5e-3", "weight_decay=1e-4",
                   "early_stopping_patience=4"],
    "neumf": ["model=neumf", "epochs=30", "embedding_dim=64", "num_negatives=4", "lr=2e-3", "weight_decay=1e-5",
              "early_stopping_patience=4"],
    "two-tower": ["model=two-tower", "epochs=16", "embedding_dim=64", "num_negatives=4", "lr=5e-3",
                  "weight_decay=1e-5", "early_stopping_patience=4"],
}
DEEP = ("mf", "mf-softmax", "neumf", "two-tower")
TARGET_RECALL, TARGET_NDCG = 0.25, 0.29


def bench(model: str, workdir: Path) -> dict[str, Any]:
    overrides = SETTINGS[model]
    run = timed_run("recsys.rank", overrides, workdir / model, plugin_runtime("recsys", dlguide_recsys.plugin),
                    progress="none")
    epochs = [json.loads(line) for line in (run.result.run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(epochs, key=lambda row: row["val/ndcg@10"])
    m = run.metrics
    return {
        "settings": overrides,
        "recall@10": round(m["test/recall@10"], 4), "ndcg@10": round(m["test/ndcg@10"], 4),
        "hit_rate@10": round(m["test/hit_rate@10"], 4), "coverage@10": round(m["test/coverage@10"], 4),
        "precision@10": round(m["test/precision@10"], 4), "mrr@10": round(m["test/mrr@10"], 4),
        "map@10": round(m["test/map@10"], 4), "val_ndcg@10": round(m["val/ndcg@10"], 4),
        "best_epoch": int(best["epoch"]), "epochs_run": len(epochs),
        "train_seconds": round(run.clock.seconds, 2), "wall_seconds": round(run.wall_seconds, 1),
        "load_average_1min": run.load_average,
        "protocol": {k.removeprefix("protocol/"): v for k, v in m.items() if k.startswith("protocol/")},
    }


def check_targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if "popularity" in rows:
        pop = rows["popularity"]["ndcg@10"]
        for name, row in rows.items():
            if name != "popularity":
                checks[f"{name} beats popularity (NDCG@10 {row['ndcg@10']} > {pop})"] = row["ndcg@10"] > pop
    deep = [n for n in DEEP if n in rows]
    if deep and "als" in rows:
        best_deep = max(deep, key=lambda n: rows[n]["ndcg@10"])
        checks[f"best deep model ({best_deep}) NDCG@10 {rows[best_deep]['ndcg@10']} >= ALS's "
               f"{rows['als']['ndcg@10']}"] = rows[best_deep]["ndcg@10"] >= rows["als"]["ndcg@10"]
    best = max(rows, key=lambda n: rows[n]["ndcg@10"])
    checks[f"best model ({best}) recall@10 {rows[best]['recall@10']} >= {TARGET_RECALL}"] = (
        rows[best]["recall@10"] >= TARGET_RECALL)
    checks[f"best model ({best}) NDCG@10 {rows[best]['ndcg@10']} >= {TARGET_NDCG}"] = (
        rows[best]["ndcg@10"] >= TARGET_NDCG)
    return checks


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    header = f"{'model':<11} {'recall@10':>9} {'NDCG@10':>8} {'HR@10':>6} {'cov@10':>7} {'train s':>8} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:<11} {r['recall@10']:>9.4f} {r['ndcg@10']:>8.4f} {r['hit_rate@10']:>6.3f} "
              f"{r['coverage@10']:>7.3f} {r['train_seconds']:>8.1f} {r['wall_seconds']:>7.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", default=str(RESULTS / "recsys.json"))
    args = parser.parse_args()
    out = Path(args.out)
    fresh: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            fresh[model] = r = bench(model, Path(tmp))
            print(f"{model}: recall@10 {r['recall@10']:.4f}, NDCG@10 {r['ndcg@10']:.4f} "
                  f"(best epoch {r['best_epoch']} of {r['epochs_run']}, {r['wall_seconds']:.0f} s)", flush=True)
    # read the saved table only now: another invocation for other models may have written it meanwhile
    saved = load_json(out)
    rows = {**saved.get("models", {}), **fresh}
    command = "python benchmarks/recsys.py" + (f" --models {' '.join(args.models)}"
                                               if args.models != list(SETTINGS) else "")
    commands = [c for c in saved.get("commands", []) if c != command] + [command]
    rows = {name: rows[name] for name in SETTINGS if name in rows}
    print()
    print_table(rows)
    checks = check_targets(rows)
    print()
    for text, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    results = {
        "commands": commands,
        "dataset": "ml-100k (recbole's files): 943 users, 1,682 items, 100,000 ratings, every rating a positive",
        "protocol": next(iter(rows.values()))["protocol"],
        "caveat": "2 CPU cores; each row records the 1-minute load average before and after its run, and "
                  "timings are only comparable within one run of this script",
        "models": rows,
        "targets": checks,
        "environment": environment(),
    }
    save_json(out, results)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
