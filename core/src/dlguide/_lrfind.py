"""``dlguide lr-find``: the learning-rate range test (Leslie Smith 2015, fastai's ``lr_find``).

    dlguide lr-find vision.classify --set batch_size=64
    dlguide lr-find example.sine --min-lr 1e-6 --max-lr 1 --steps 80 --out runs/sine-lr

An ordinary run of the task, in a temporary folder that is removed afterwards, with a hook
object that raises every optimizer's rate exponentially from ``--min-lr`` to ``--max-lr``
over ``--steps`` training batches (set after each batch, over the config's schedule) and
records the loss, smoothed as fastai does (an exponential moving average with bias
correction). It stops after ``--steps`` batches or once the smoothed loss passes 4x its
best. The suggested rate is where the smoothed loss falls fastest (the steepest negative
slope against log(lr), before its minimum); the minimum's rate / 10, the older rule of
thumb, is reported beside it. ``--out`` gets ``lr_find.png`` and ``lr_find.json``; the
probe run itself is never kept: its weights were driven to divergence on purpose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dlguide._errors import RunError, RunInterrupted, UsageError
from dlguide.hookspecs import hookimpl

SMOOTHING = 0.98  # fastai's beta
DIVERGES_AT = 4.0  # times the best smoothed loss
METHOD = "steepest descent of the smoothed loss"


class _RangeTestDone(Exception):
    """Ends the probe run where the range test ends (the loop has no way to stop mid-epoch)."""


class RangeTest:
    """The run's hook object: sets the rate of each batch and records the loss it gave."""

    def __init__(self, min_lr: float, max_lr: float, steps: int) -> None:
        self.rates = [min_lr * (max_lr / min_lr) ** (i / (steps - 1)) for i in range(steps)]
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped = "end of the run"
        self.scales: list[list[float]] = []
        self._average = 0.0

    def _set(self, trainer: Any, step: int) -> None:
        for optimizer, scales in zip(trainer.optimizers, self.scales):
            for group, scale in zip(optimizer.param_groups, scales):
                group["lr"] = self.rates[step] * scale

    @hookimpl
    def dlguide_run_start(self, trainer: Any) -> None:
        # groups keep their ratio to the config's lr (a task's own optimizers, a backbone's lower rate)
        self.scales = [[group["lr"] / trainer.config.lr for group in opt.param_groups] for opt in trainer.optimizers]
        self._set(trainer, 0)

    @hookimpl
    def dlguide_train_batch_end(self, trainer: Any, batch_idx: int, loss: Any) -> None:
        if loss is None:
            raise UsageError(f"task {trainer.task.name!r} logs no 'loss' per training batch; lr-find needs one")
        step = len(self.losses)
        value = float(loss.float().mean()) if hasattr(loss, "float") else float(loss)
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * value
        smooth = self._average / (1 - SMOOTHING ** (step + 1))
        self.lrs.append(self.rates[step])
        self.losses.append(value)
        self.smoothed.append(smooth)
        best = min(self.smoothed)
        if not math.isfinite(smooth) or smooth > best + (DIVERGES_AT - 1) * abs(best):
            self.stopped = "diverged"
            raise _RangeTestDone
        if step + 1 == len(self.rates):
            self.stopped = "steps"
            raise _RangeTestDone
        self._set(trainer, step + 1)


@dataclasses.dataclass
class LRFindResult:
    """What the range test measured and suggests."""

    task: str
    suggestion: float  # steepest descent of the smoothed loss
    minimum: float  # the rate at the smoothed loss's minimum
    stopped: str  # steps, diverged or end of the run
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    picture: Path
    data: Path

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "suggested_lr": self.suggestion, "method": METHOD, "minimum_lr": self.minimum,
                "minimum_lr_over_10": self.minimum / 10, "stopped": self.stopped, "batches": len(self.lrs),
                "points": [{"lr": lr, "loss": _safe(loss), "smoothed": _safe(smooth)}
                           for lr, loss, smooth in zip(self.lrs, self.losses, self.smoothed)]}


def _safe(value: float) -> float | None:
    return value if math.isfinite(value) else None


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(the rate of steepest descent before the minimum, the rate at the minimum) of the smoothed loss.

    The first tenth of the curve is left out of the slope, as fastai does: an average over a
    few batches still moves with each of them.
    """
    import numpy as np

    finite = [(lr, s) for lr, s in zip(lrs, smoothed) if math.isfinite(s)]
    if len(finite) < 3:
        raise UsageError(f"the loss diverged within {len(lrs)} batches from lr {lrs[0]:.3g}; lower --min-lr")
    rates, losses = map(np.asarray, zip(*finite))
    lowest = int(np.argmin(losses))
    slope = np.gradient(losses, np.log10(rates))
    skip = len(losses) // 10 if lowest > len(losses) // 10 else 0
    steepest = skip + int(np.argmin(slope[skip: lowest + 1]))
    return float(rates[steepest]), float(rates[lowest])


def lr_find(task: str, *, overrides: Iterable[str] = (), min_lr: float = 1e-7, max_lr: float = 10.0,
            steps: int = 100, out: str | Path | None = None, runtime: Any = None) -> LRFindResult:
    """Run the range test on ``task`` and write ``lr_find.png`` and ``lr_find.json`` into ``out``
    (default ``runs/TASK/lr-find``); see the module's docstring."""
    from dlguide._plugins import get_runtime
    from dlguide._rundir import write_text_atomic
    from dlguide._runs import build_task, run_task

    if not (0 < min_lr < max_lr < math.inf):
        raise UsageError(f"--min-lr {min_lr:g} and --max-lr {max_lr:g}: expected 0 < min-lr < max-lr")
    if steps < 5:
        raise UsageError(f"--steps must be >= 5, not {steps}")
    rt = runtime or get_runtime()
    # every batch counts as a step of the test: no schedule, warmup or early stop, a cheap validation
    sets = [*overrides, "scheduler=none", "warmup_steps=0", "early_stopping_patience=0", "limit_eval_batches=1",
            "checkpoint_interval=1e9", f"epochs={steps}"]
    build_task(task, overrides=sets, runtime=rt)  # a bad --set is a usage error before any folder is made
    folder = Path(out) if out is not None else Path("runs") / task / "lr-find"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; expected a folder for lr_find.png and lr_find.json")
    test = RangeTest(min_lr, max_lr, steps)
    with tempfile.TemporaryDirectory(prefix="dlguide-lr-find-") as tmp:
        try:
            run_task(task, overrides=sets, out=Path(tmp) / "run", runtime=rt, progress="none",
                     plugins={"dlguide.lr_find": test})
        except _RangeTestDone:
            pass
        except RunInterrupted:
            raise
        except RunError:  # the loss went NaN or infinite: the rate before it is the end of the curve
            if not test.lrs:
                raise
            test.stopped = "diverged"
    if not test.lrs:
        raise UsageError(f"task {task!r} trained no batch; lr-find needs training batches")
    suggestion, minimum = suggest(test.lrs, test.smoothed)
    folder.mkdir(parents=True, exist_ok=True)
    result = LRFindResult(task, suggestion, minimum, test.stopped, test.lrs, test.losses, test.smoothed,
                          folder / "lr_find.png", folder / "lr_find.json")
    draw(result)
    write_text_atomic(result.data, json.dumps({**result.as_dict(), "min_lr": min_lr, "max_lr": max_lr,
                                               "steps": steps, "set": list(overrides)}, indent=2) + "\n")
    return result


def draw(result: LRFindResult) -> Path:
    """Loss against rate (log scale), the suggestion and the minimum / 10 marked."""
    from dlguide._plots import figure

    fig = figure(7, 4.5)
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, alpha=0.3, linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, linewidth=2, label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    ax.axvline(result.minimum / 10, color="grey", linestyle=":", label=f"minimum / 10 {result.minimum / 10:.2g}")
    finite = [s for s in result.smoothed if math.isfinite(s)]
    if finite:  # the diverging end would squash the curve: it leaves the picture upwards
        low = min(finite)
        high = max(finite[: finite.index(low) + 1])
        span = max(high - low, 1e-12)
        ax.set_ylim(low - 0.1 * span, high + 0.5 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"{result.task}: learning-rate range test ({len(result.lrs)} batches, {result.stopped})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(result.picture, dpi=100)
    return result.picture


def add_lr_find_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("lr-find", help="learning-rate range test: suggest a learning rate for a task")
    p.add_argument("task", metavar="TASK", nargs="?")  # or the word after --set values
    p.add_argument("--set", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override a config key (dotted for nested keys); repeatable")
    p.add_argument("--min-lr", metavar="LR", type=float, default=1e-7, help="the first batch's rate")
    p.add_argument("--max-lr", metavar="LR", type=float, default=10.0, help="the last batch's rate")
    p.add_argument("--steps", metavar="N", type=int, default=100, help="training batches the rate rises over")
    p.add_argument("--out", metavar="DIR", help="folder for lr_find.png and lr_find.json (default runs/TASK/lr-find)")
    p.set_defaults(handler=cmd_lr_find)
    return p


def cmd_lr_find(args: argparse.Namespace) -> int:
    from dlguide._cli import _positional

    _positional(args, "task", "TASK")
    r = lr_find(args.task, overrides=args.set, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                out=args.out, runtime=args.runtime)
    print(f"suggested lr {r.suggestion:.3g} ({METHOD}; the minimum's rate / 10: {r.minimum / 10:.3g}), "
          f"{len(r.lrs)} batches ({r.stopped}); {r.picture}")
    return 0
