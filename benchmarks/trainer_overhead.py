"""Trainer overhead: the same small CNN on sklearn's 8x8 digits, trained by the dlguide
Trainer (progress bar, per-epoch metric logging, checkpoints on) and by a plain PyTorch
loop, with the same data order, initial weights and hyper-parameters, alternating in one
process. Prints the ratio of fit wall times and the final train losses; saves
benchmarks/results/trainer_overhead.json.

    python benchmarks/trainer_overhead.py [--epochs 20] [--repeats 3]

Both sides do the same work per epoch: a training pass and a validation pass with loss and
accuracy; at the end a test pass. The Trainer also writes what a run directory holds
(metrics.jsonl, last/best checkpoints, TensorBoard events when installed, safetensors
weights, learning-curve PNG), and that is counted in its time.

Machines are shared: the two sides alternate, and which one goes first alternates too, so
that a burst of load elsewhere falls on both; the ratio is that of the median wall times.
Process CPU times are reported beside them (less sensitive to other processes' load).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlguide.checkpoint import seed_everything
from dlguide.config import resolve
from dlguide.errors import UsageError
from dlguide.plugins import load_runtime
from dlguide.resources import package_file
from dlguide.rundir import RunDir
from dlguide.task import DataSplits, Task, TrainConfig
from dlguide.trainer import Trainer

SEED, BATCH, LR = 0, 64, 1e-3


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        path = package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn", purpose="this benchmark's data")
    except UsageError as exc:
        sys.exit(str(exc))
    data = np.loadtxt(io.BytesIO(gzip.decompress(path.read_bytes())), delimiter=",", dtype=np.float32)
    x = torch.from_numpy(data[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    return x, torch.from_numpy(data[:, -1].astype(np.int64))


def splits() -> DataSplits:
    x, y = load_digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    x, y = x[order], y[order]
    return DataSplits(TensorDataset(x[:1257], y[:1257]), TensorDataset(x[1257:1527], y[1257:1527]),
                      TensorDataset(x[1527:], y[1527:]))


class SmallCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 2 * 2, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10),
        )


class DigitsTask(Task):
    def build_data(self) -> DataSplits:
        return splits()

    def build_model(self) -> nn.Module:
        return SmallCNN()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def configure_metrics(self, stage):
        return {"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=10)}

    def validation_step(self, batch, metrics):
        x, y = batch
        logits = self.model(x)
        metrics["accuracy"].update(logits, y)
        return nn.functional.cross_entropy(logits, y)


def fit_trainer(epochs: int, workdir: Path) -> tuple[float, float, float]:
    cfg = resolve(TrainConfig, overrides=[f"epochs={epochs}", f"batch_size={BATCH}", f"lr={LR}", f"seed={SEED}",
                                          "device=cpu", "monitor=val/accuracy"])
    runtime = load_runtime(use_entry_points=False)
    out = Path(tempfile.mkdtemp(dir=workdir))
    started, cpu = time.perf_counter(), time.process_time()
    trainer = Trainer(DigitsTask(cfg, name="bench.digits"), RunDir.new("bench.digits", out / "run"),
                      runtime=runtime, progress="bar")
    trainer.fit()
    return time.perf_counter() - started, time.process_time() - cpu, trainer.history[-1]["train/loss"]


def fit_plain(epochs: int) -> tuple[float, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    seed_everything(SEED)
    data = splits()
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator()
    train = DataLoader(data.train, batch_size=BATCH, shuffle=True, generator=g)
    # A loader without a generator of its own draws its worker seed from the global RNG,
    # which would shift the dropout masks of later epochs; the Trainer's loaders have one.
    val = DataLoader(data.val, batch_size=BATCH, generator=torch.Generator())
    test = DataLoader(data.test, batch_size=BATCH, generator=torch.Generator())

    def evaluate(loader: DataLoader) -> tuple[float, float]:
        """Loss and accuracy: what the Trainer reports for val and test."""
        model.eval()
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for x, y in loader:
                logits = model(x)
                loss_sum += nn.functional.cross_entropy(logits, y).item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
        model.train()
        return loss_sum / total, correct / total

    for epoch in range(epochs):
        g.manual_seed(SEED + epoch)  # the same per-epoch order the Trainer uses
        loss_sum, seen = 0.0, 0
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(x)
            seen += len(x)
        val_loss, val_acc = evaluate(val)
        print(f"plain epoch {epoch + 1}/{epochs} loss {loss_sum / seen:.4f} val loss {val_loss:.4f} "
              f"acc {val_acc:.4f}", file=sys.stderr)
    evaluate(test)
    return time.perf_counter() - started, time.process_time() - cpu, loss_sum / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_overhead.json"))
    args = parser.parse_args()
    fit_plain(1)  # warm up both code paths (imports, allocator) before timing
    wall: dict[str, list[float]] = {"trainer": [], "plain": []}
    cpu: dict[str, list[float]] = {"trainer": [], "plain": []}
    losses: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fit_trainer(1, Path(tmp))
        sides = {"trainer": lambda: fit_trainer(args.epochs, Path(tmp)), "plain": lambda: fit_plain(args.epochs)}
        for repeat in range(args.repeats):
            for side in (("trainer", "plain") if repeat % 2 == 0 else ("plain", "trainer")):
                w, c, losses[side] = sides[side]()
                wall[side].append(w)
                cpu[side].append(c)
    trainer_loss, plain_loss = losses["trainer"], losses["plain"]
    trainer_s, plain_s = wall["trainer"], wall["plain"]
    ratio = statistics.median(trainer_s) / statistics.median(plain_s)
    cpu_ratio = statistics.median(cpu["trainer"]) / statistics.median(cpu["plain"])
    result = {
        "workload": f"SmallCNN on sklearn digits (1257 train), {args.epochs} epochs, batch {BATCH}, Adam lr {LR}",
        "repeats": args.repeats,
        "trainer_seconds": trainer_s,
        "plain_seconds": plain_s,
        "ratio_median": ratio,
        "trainer_cpu_seconds": cpu["trainer"],
        "plain_cpu_seconds": cpu["plain"],
        "cpu_ratio_median": cpu_ratio,
        "load_average_after": list(os.getloadavg()),
        "trainer_final_train_loss": trainer_loss,
        "plain_final_train_loss": plain_loss,
        "losses_equal_5dp": round(trainer_loss, 5) == round(plain_loss, 5),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "target": "ratio <= 1.05 and losses equal to 5 decimals",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"trainer fit: median {statistics.median(trainer_s):.2f}s  {[round(s, 2) for s in trainer_s]}")
    print(f"plain loop:  median {statistics.median(plain_s):.2f}s  {[round(s, 2) for s in plain_s]}")
    print(f"ratio trainer/plain: {ratio:.3f}  (target <= 1.05); process CPU time ratio {cpu_ratio:.3f}")
    print(f"final train loss: trainer {trainer_loss:.6f}  plain {plain_loss:.6f}  "
          f"equal to 5 decimals: {result['losses_equal_5dp']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
