"""Trainer overhead: the same small CNN on sklearn's 8x8 digits, trained by the dlguide
Trainer (progress bar, per-epoch metric logging, checkpoints on) and by a plain PyTorch
loop, with the same data order, initial weights and hyper-parameters, alternating in one
process (epoch by epoch). Prints the ratio of fit wall times and the final train losses; saves
benchmarks/results/trainer_overhead.json.

    python benchmarks/trainer_overhead.py [--epochs 20] [--long-epochs 60] [--repeats 15] [--pairing epoch|run]

Two spans are timed on each side:

- fit: from building the run (data, model, optimizer) to the end of the last epoch, each
  epoch a training pass and a validation pass with loss and accuracy. The Trainer's span
  also holds its progress bar, metrics.jsonl, TensorBoard events (when installed) and the
  last/best checkpoints of every epoch, up to the moment the last one is on disk (read from
  the ``dlguide_checkpoint_saved`` hook). This is the span the target is about.
- run: fit plus the end of the run. The plain loop tests its last weights; the Trainer
  reloads the best checkpoint, tests it, writes safetensors weights, metrics.json and the
  learning-curve PNG. Reported beside, with the Trainer's extra time per run in ms.

Machines are shared and their speed drifts by several percent within seconds, so the two
sides run in pairs and each pair's ratio is taken; the ratio reported is the median of the
pairs' ratios (with quartiles, and the ratio of the median times beside it):

- ``--pairing epoch`` (the default): the plain loop's epochs are woven into the Trainer's
  run, each right before the Trainer's epoch of the same number (or, every other pair,
  right after it), through the Trainer's ``dlguide_epoch_start`` hook. The plain loop
  keeps its own python, numpy and torch RNG states, so each side trains exactly as it
  would alone; the time of the plain loop's steps, and of the switch of RNG states around
  them, is taken off the Trainer's span. The two sides then meet the machine within an
  epoch (about 60 ms) of each other.
- ``--pairing run``: whole runs back to back, which side goes first alternating.

Process CPU times are reported beside them. A second, longer run (--long-epochs) shows
the ratio where the fixed costs of a run weigh less. One pair at full length comes first,
untimed (imports, first calls, allocator). Exits 1 when the target (fit ratio <= 1.05 at
--epochs, losses equal to 5 decimals) is missed.
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
from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlguide._checkpoint import capture_rng, restore_rng, seed_everything
from dlguide._config import resolve
from dlguide._errors import UsageError
from dlguide.hookspecs import hookimpl
from dlguide._plugins import load_runtime
from dlguide._resources import package_file
from dlguide._rundir import RunDir
from dlguide._task import DataSplits, Task, TrainConfig
from dlguide._trainer import Trainer

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
    metric_modes = {"accuracy": "max"}

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


TRAINER_SETTINGS: list[str] = []  # --set: further Trainer settings, e.g. async_checkpoints=false


class Span:
    """Wall and process CPU time from the span's creation to marks on the way, less the time
    spent on the other side of the comparison in between (``excluded``, added by ``PlainLoop.step``)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.excluded = [0.0, 0.0]
        self.marks: dict[str, tuple[float, float]] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = (time.perf_counter() - self.wall - self.excluded[0],
                            time.process_time() - self.cpu - self.excluded[1])


class PlainLoop:
    """The plain PyTorch loop, in steps: ``setup`` builds the run, ``epoch`` trains and validates
    one epoch, ``test`` evaluates the last weights. Each step can run inside a Trainer run
    (``Weave``): the loop keeps its own python, numpy and torch RNG states between steps."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.done = 0  # epochs trained
        self.loss = float("nan")
        self.spent = [0.0, 0.0]  # wall and CPU seconds in the steps so far
        self.rng: dict[str, Any] | None = None

    def setup(self) -> None:
        seed_everything(SEED)
        data = splits()
        self.model = SmallCNN()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.g = torch.Generator()
        self.train = DataLoader(data.train, batch_size=BATCH, shuffle=True, generator=self.g)
        # A loader without a generator of its own draws its worker seed from the global RNG,
        # which would shift the dropout masks of later epochs; the Trainer's loaders have one.
        self.val = DataLoader(data.val, batch_size=BATCH, generator=torch.Generator())
        self.test_loader = DataLoader(data.test, batch_size=BATCH, generator=torch.Generator())

    def evaluate(self, loader: DataLoader) -> tuple[float, float]:
        """Loss and accuracy: what the Trainer reports for val and test."""
        model = self.model
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

    def epoch(self) -> None:
        model, opt = self.model, self.opt
        self.g.manual_seed(SEED + self.done)  # the same per-epoch order the Trainer uses
        loss_sum, seen = 0.0, 0
        for x, y in self.train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(x)
            seen += len(x)
        val_loss, val_acc = self.evaluate(self.val)
        self.done += 1
        self.loss = loss_sum / seen
        print(f"plain epoch {self.done}/{self.epochs} loss {self.loss:.4f} val loss {val_loss:.4f} "
              f"acc {val_acc:.4f}", file=sys.stderr)

    def test(self) -> None:
        self.evaluate(self.test_loader)

    def step(self, work: Any, other: Span | None = None) -> None:
        """Run one step with the loop's own RNG states; its time counts for this loop and, with
        the switch of RNG states around it, is taken off ``other`` (the Trainer's span)."""
        wall, cpu = time.perf_counter(), time.process_time()
        outer = capture_rng()
        if self.rng is not None:
            restore_rng(self.rng)
        step_wall, step_cpu = time.perf_counter(), time.process_time()
        work()
        self.spent[0] += time.perf_counter() - step_wall
        self.spent[1] += time.process_time() - step_cpu
        self.rng = capture_rng()
        restore_rng(outer)
        if other is not None:
            other.excluded[0] += time.perf_counter() - wall
            other.excluded[1] += time.process_time() - cpu


class Weave:
    """Runs the plain loop's epochs inside a Trainer run, at the start of the Trainer's epochs:
    epoch k of the plain loop right before the Trainer's epoch k (``lag`` 0) or right after it
    (``lag`` 1, the last one after the Trainer's run). The two sides then meet the machine's
    changes of speed within one epoch of each other."""

    def __init__(self, plain: PlainLoop, lag: int, span: Span) -> None:
        self.plain, self.lag, self.span = plain, lag, span

    @hookimpl(tryfirst=True)  # before the Trainer's own epoch-start work (the progress clock)
    def dlguide_epoch_start(self, trainer, epoch):
        while self.plain.done < epoch - self.lag:
            self.plain.step(self.plain.epoch, self.span)


class FitClock:
    """Marks the end of the Trainer's fit through public hooks: after every plugin's
    epoch-end work, or later when a checkpoint of that epoch reaches the disk."""

    def __init__(self, span: Span) -> None:
        self.span = span

    @hookimpl(wrapper=True)
    def dlguide_epoch_end(self, trainer, epoch, metrics):
        result = yield
        self.span.mark("fit")
        return result

    @hookimpl
    def dlguide_checkpoint_saved(self, trainer, path, kind) -> None:
        if trainer.epoch == trainer.max_epochs and kind != "interrupt":
            self.span.mark("fit")  # the last epoch's checkpoint, maybe written on the checkpoint thread


def fit_trainer(epochs: int, workdir: Path, plain: PlainLoop | None = None, lag: int = 0) -> tuple[Span, float]:
    """A Trainer run; with ``plain``, the plain loop's epochs are woven into it (``Weave``)."""
    cfg = resolve(TrainConfig, overrides=[f"epochs={epochs}", f"batch_size={BATCH}", f"lr={LR}", f"seed={SEED}",
                                          "device=cpu", "monitor=val/accuracy", *TRAINER_SETTINGS])
    runtime = load_runtime(use_entry_points=False)
    out = Path(tempfile.mkdtemp(dir=workdir))
    span = Span()
    plugins: dict[str, object] = {"bench.clock": FitClock(span)}
    if plain is not None:
        plugins["bench.weave"] = Weave(plain, lag, span)
    trainer = Trainer(DigitsTask(cfg, name="bench.digits"), RunDir.new("bench.digits", out / "run"),
                      runtime=runtime, progress="bar", plugins=plugins)
    trainer.fit()
    span.mark("run")
    return span, trainer.history[-1]["train/loss"]


def fit_plain(epochs: int) -> tuple[Span, float]:
    """A plain run on its own: setup, every epoch, test."""
    plain = PlainLoop(epochs)
    span = Span()
    plain.setup()
    while plain.done < epochs:
        plain.epoch()
    span.mark("fit")
    plain.test()
    span.mark("run")
    return span, plain.loss


def fit_woven(epochs: int, workdir: Path, lag: int) -> dict[str, tuple[Span, float]]:
    """One Trainer run and one plain run, epoch by epoch in turn (``Weave``)."""
    plain = PlainLoop(epochs)
    plain_span = Span()  # marked with the time of the plain loop's steps only
    plain.step(plain.setup)
    trainer_span, trainer_loss = fit_trainer(epochs, workdir, plain, lag)
    while plain.done < epochs:
        plain.step(plain.epoch)
    plain_span.marks["fit"] = (plain.spent[0], plain.spent[1])
    plain.step(plain.test)
    plain_span.marks["run"] = (plain.spent[0], plain.spent[1])
    return {"trainer": (trainer_span, trainer_loss), "plain": (plain_span, plain.loss)}


def quartiles(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return [q[0], statistics.median(values), q[2]]


def measure(epochs: int, repeats: int, workdir: Path, pairing: str) -> dict[str, Any]:
    """Both sides ``repeats`` times at ``epochs``, as pairs: woven epoch by epoch into one
    another (``pairing="epoch"``), or whole runs back to back (``"run"``); which side goes
    first alternates from pair to pair."""
    spans: dict[str, list[Span]] = {"trainer": [], "plain": []}
    losses: dict[str, list[float]] = {"trainer": [], "plain": []}  # final train loss of every run
    for repeat in range(repeats):
        if pairing == "epoch":
            pair = fit_woven(epochs, workdir, lag=repeat % 2)
        else:
            sides = {"trainer": lambda: fit_trainer(epochs, workdir), "plain": lambda: fit_plain(epochs)}
            pair = {side: sides[side]() for side in (("trainer", "plain") if repeat % 2 == 0 else ("plain", "trainer"))}
        for side, (span, loss) in pair.items():
            spans[side].append(span)
            losses[side].append(loss)
    row: dict[str, Any] = {"epochs": epochs}
    for part in ("fit", "run"):
        wall = {side: [s.marks[part][0] for s in spans[side]] for side in spans}
        cpu = {side: statistics.median(s.marks[part][1] for s in spans[side]) for side in spans}
        med = {side: statistics.median(wall[side]) for side in wall}
        pairs = [t / p for t, p in zip(wall["trainer"], wall["plain"])]
        row[part] = {
            "trainer_seconds": wall["trainer"], "plain_seconds": wall["plain"],
            "paired_ratios": pairs,
            "paired_ratio_quartiles": quartiles(pairs),
            "ratio": statistics.median(pairs),
            "ratio_of_medians": med["trainer"] / med["plain"],
            "overhead_seconds_median": med["trainer"] - med["plain"],
            "cpu_ratio_of_medians": cpu["trainer"] / cpu["plain"],
        }
    row.update({
        "trainer_final_train_loss": losses["trainer"][-1], "plain_final_train_loss": losses["plain"][-1],
        # every pair: a side that drew from the other's random numbers would train differently
        "losses_equal_5dp": all(round(t, 5) == round(p, 5) for t, p in zip(losses["trainer"], losses["plain"])),
        "final_train_losses": losses,
    })
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--long-epochs", type=int, default=60,
                        help="a second, longer run, where fixed costs weigh less (0: off)")
    parser.add_argument("--repeats", type=int, default=15, help="pairs of runs at --epochs (half as many at "
                                                                     "--long-epochs, at least 3)")
    parser.add_argument("--pairing", choices=["epoch", "run"], default="epoch",
                        help="epoch: each pair's two runs woven epoch by epoch into one another; run: back to back")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    parser.add_argument("--set", nargs="*", default=[], dest="settings", metavar="KEY=VALUE",
                        help="further Trainer settings, e.g. async_checkpoints=false")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_overhead.json"))
    args = parser.parse_args()
    TRAINER_SETTINGS.extend(args.settings)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        measure(args.epochs, 1, Path(tmp), args.pairing)  # warm up both (imports, first calls, allocator), untimed
        runs = [measure(args.epochs, args.repeats, Path(tmp), args.pairing)]
        if args.long_epochs > args.epochs:
            runs.append(measure(args.long_epochs, max(3, args.repeats // 2), Path(tmp), args.pairing))
    main_run = runs[0]
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/trainer_overhead.py", *sys.argv[1:]]),
        "workload": f"SmallCNN on sklearn digits (1257 train), batch {BATCH}, Adam lr {LR}; the Trainer with its "
                    "progress bar, metrics.jsonl, TensorBoard events when installed and its checkpoints at the "
                    "default checkpoint_interval (fit), then the best checkpoint's test, safetensors weights and "
                    "learning-curve PNG (run)",
        "pairing": args.pairing,
        "runs": runs,
        "ratio": main_run["fit"]["ratio"],
        "run_ratio": main_run["run"]["ratio"],
        "losses_equal_5dp": all(r["losses_equal_5dp"] for r in runs),
        "target": "fit ratio <= 1.05 and losses equal to 5 decimals",
        "load_average_after": list(os.getloadavg()),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        fit, run = r["fit"], r["run"]
        end_ms = 1000 * (run["overhead_seconds_median"] - fit["overhead_seconds_median"])
        q = fit["paired_ratio_quartiles"]
        trainer_s, plain_s = statistics.median(fit["trainer_seconds"]), statistics.median(fit["plain_seconds"])
        print(f"{r['epochs']} epochs, {len(fit['paired_ratios'])} pairs ({args.pairing} by {args.pairing}): "
              f"fit: trainer median {trainer_s:.3f}s, plain median {plain_s:.3f}s; "
              f"ratio {fit['ratio']:.3f} (median of the pairs; quartiles {q[0]:.3f}-{q[2]:.3f}; ratio of the medians "
              f"{fit['ratio_of_medians']:.3f}, CPU time {fit['cpu_ratio_of_medians']:.3f})")
        print(f"    whole run: ratio {run['ratio']:.3f} (the end of the run {end_ms:.0f} ms more); final train loss "
              f"{r['trainer_final_train_loss']:.6f} vs {r['plain_final_train_loss']:.6f}, equal to 5 decimals "
              f"in every pair: {r['losses_equal_5dp']}")
    passed = main_run["fit"]["ratio"] <= 1.05 and result["losses_equal_5dp"]
    print(f"{'PASS' if passed else 'FAIL'}  fit ratio {main_run['fit']['ratio']:.3f} at {main_run['epochs']} "
          f"epochs (target <= 1.05, losses equal to 5 decimals); whole run {main_run['run']['ratio']:.3f}")
    print(f"saved {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
