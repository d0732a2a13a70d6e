"""The Trainer's own features, written as hook implementations and registered per run:
metric logging, early stopping, checkpointing and the progress display.

A third-party plugin observes or extends a run through exactly the same hooks.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dlguide.hookspecs import hookimpl

if TYPE_CHECKING:
    from dlguide._rundir import EpochLog
    from dlguide._trainer import Trainer


def is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def monitored(trainer: Trainer, metrics: dict[str, float]) -> float:
    key = trainer.config.monitor
    if key not in metrics:
        from dlguide._errors import UsageError

        known = ", ".join(sorted(k for k in metrics if "/" in k))
        raise UsageError(f"monitor {key!r} is not among this task's metrics: {known}")
    return metrics[key]


class MetricsLogger:
    """Appends each epoch to metrics.jsonl, mirrors it to TensorBoard when installed, and
    draws the learning curves when the run ends or stops.

    TensorBoard's events are handed to its writer at most every ``TENSORBOARD_S`` seconds
    (and at the end) and flushed then: what TensorBoard shows is as fresh as with its own
    10-second flush, while short epochs do not wake the writer's thread one by one.
    """

    TENSORBOARD_S = 10.0

    def __init__(self) -> None:
        self.log: EpochLog | None = None
        self.writer: Any = None
        self.summary: Any = None
        self.events: list[tuple[int, Any]] = []
        self.pushed_at = 0.0

    @hookimpl(tryfirst=True)
    def dlguide_run_start(self, trainer: Trainer) -> None:
        self.log = trainer.run_dir.open_epoch_log()
        if importlib.util.find_spec("tensorboard") is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard import SummaryWriter

            # events are handed over and flushed by _push; its own flush interval is only the backstop
            self.writer = SummaryWriter(str(trainer.run_dir.path / "tensorboard"), purge_step=trainer.epoch + 1,
                                        flush_secs=self.TENSORBOARD_S)
            self.summary = Summary
            self.pushed_at = time.monotonic()

    @hookimpl(tryfirst=True)
    def dlguide_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.log is not None:
            self.log.append(metrics)
        if self.writer is not None:
            # one event holds the epoch's scalars (what add_scalar would write one by one)
            values = [self.summary.Value(tag=key, simple_value=float(value)) for key, value in metrics.items()
                      if key != "epoch"]
            self.events.append((epoch, self.summary(value=values)))
            if time.monotonic() - self.pushed_at >= self.TENSORBOARD_S:
                self._push()

    def _push(self) -> None:
        """Hand the events so far to TensorBoard's writer and have them written now."""
        for epoch, summary in self.events:
            self.writer.file_writer.add_summary(summary, epoch)
        self.events = []
        self.writer.flush()
        self.pushed_at = time.monotonic()

    def _close(self, trainer: Trainer) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.writer is not None:
            self._push()
            self.writer.close()
            self.writer = None
        if trainer.history:
            from dlguide._plots import learning_curves

            learning_curves(trainer.history, trainer.run_dir.path / "learning_curves.png", trainer.task.name)

    @hookimpl
    def dlguide_run_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._close(trainer)

    @hookimpl
    def dlguide_run_exception(self, trainer: Trainer, exception: BaseException) -> None:
        self._close(trainer)


class EarlyStopping:
    """Stops the run after ``early_stopping_patience`` epochs without improvement of ``monitor``."""

    def __init__(self, patience: int, mode: str) -> None:
        self.patience, self.mode = patience, mode
        self.best: float | None = None
        self.wait = 0

    @hookimpl
    def dlguide_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        value = monitored(trainer, metrics)
        if is_better(value, self.best, self.mode):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True
                trainer.stop_reason = (f"early stopping: {trainer.config.monitor} did not improve for "
                                       f"{self.patience} epochs (best {self.best:.6g})")

    @hookimpl
    def dlguide_save_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        checkpoint["callbacks"]["early_stopping"] = {"best": self.best, "wait": self.wait}

    @hookimpl
    def dlguide_load_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["callbacks"].get("early_stopping")
        if state:
            self.best, self.wait = state["best"], state["wait"]


class Checkpointer:
    """Writes ``last.ckpt`` at the end of an epoch once ``checkpoint_interval`` seconds have
    passed since the previous write (every epoch with 0), at the end of training, and after
    the Trainer's own checkpoint on SIGINT/SIGTERM; ``best.ckpt`` is the state of the best
    epoch by ``monitor``.

    Between writes the best epoch's state is kept in memory (copied to the CPU) and written
    together with the next ``last.ckpt``, so the two files on disk always belong together: a
    run resumed from ``last.ckpt`` tests the same best weights as one that never stopped.
    The interval bounds what checkpoints cost on short epochs (a checkpoint per 60 s, not
    per 60 ms) and what a crash can lose; on epochs longer than it, every epoch is written.

    It runs last so that the other plugins' state (early stopping) is already updated. With
    ``async_checkpoints`` (the default) the state is serialized at the end of the epoch and
    written on a background thread while the next epoch trains.
    """

    def __init__(self, mode: str, interval: float) -> None:
        self.mode, self.interval = mode, interval
        self.best: float | None = None
        self.best_epoch = 0  # the epoch whose state best.ckpt holds (or will, once pending_best is written)
        self.pending_best: dict[str, Any] | None = None  # the best epoch's state, not yet on disk
        self.spare: dict[str, Any] | None = None  # a copy already written, whose memory the next copy reuses
        self.written_at = time.monotonic()

    @hookimpl
    def dlguide_run_start(self, trainer: Trainer) -> None:
        self.written_at = time.monotonic()

    @hookimpl(trylast=True)
    def dlguide_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        value = monitored(trainer, metrics)
        improved = is_better(value, self.best, self.mode)
        if improved:
            self.best, self.best_epoch = value, epoch
        final = trainer.should_stop or trainer.epoch >= trainer.max_epochs
        # every process takes the same decision (the first to pass the interval decides): a
        # checkpoint's state may need every process to gather it
        due = trainer.strategy.agree((time.monotonic() - self.written_at >= self.interval,))[0]
        if not final and not due:
            if improved:
                from dlguide._checkpoint import detached_copy

                self.pending_best = detached_copy(trainer.checkpoint_state(), into=self.pending_best or self.spare)
                self.spare = None
            return
        background = trainer.config.async_checkpoints
        # best before last: last.ckpt names the best epoch, and whatever a crash interrupts, the
        # best.ckpt on disk is the one it names or is put right from last.ckpt on resume
        if not improved:
            self.flush_best(trainer, background)
        last = trainer.save_checkpoint(trainer.run_dir.last_ckpt, "last", background=background)
        if improved:
            trainer.save_checkpoint(trainer.run_dir.best_ckpt, "best", same_as=last, background=background)
            self.spare = self.pending_best or self.spare
            self.pending_best = None
        self.written_at = time.monotonic()

    def flush_best(self, trainer: Trainer, background: bool = False) -> None:
        """Write the best epoch's state kept in memory, if any (before a last.ckpt that names it)."""
        if self.pending_best is None:
            return
        state, self.pending_best = self.pending_best, None
        # serialized before save_checkpoint returns: its tensors are free to be copied into again
        trainer.save_checkpoint(trainer.run_dir.best_ckpt, "best", state=state, background=background)
        self.spare = state

    @hookimpl
    def dlguide_save_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        checkpoint["callbacks"]["checkpointer"] = {"best": self.best, "best_epoch": self.best_epoch}

    @hookimpl
    def dlguide_load_checkpoint(self, trainer: Trainer, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["callbacks"].get("checkpointer")
        if not state:
            return
        self.best = state["best"]
        self.best_epoch = int(state.get("best_epoch", 0))
        # a crash between last.ckpt and the best.ckpt linked to it: put best right from last
        if self.best_epoch and self.best_epoch == int(checkpoint["epoch"]) and not checkpoint.get("batch_in_epoch") \
                and trainer.strategy.is_writer and checkpoint_epoch(trainer.run_dir.best_ckpt) != self.best_epoch:
            from dlguide._checkpoint import atomic_link

            atomic_link(trainer.run_dir.last_ckpt, trainer.run_dir.best_ckpt)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was written at (its tensors mapped, not read), or None."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:
        return None


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


class ProgressReporter:
    """A progress bar per epoch on a terminal (loss, samples/s, ETA), one line per epoch
    otherwise, and a table of final metrics at the end.

    The bar appears once its epoch has run for ``DELAY_S``: an epoch shorter than that is
    over before a bar could be read, and shows its line only, at the cost of one write.
    """

    REFRESH_S = 0.25
    DELAY_S = 0.25

    def __init__(self, mode: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.bar: Any = None
        self.ncols: int | None = None
        self.next_refresh = 0.0
        self.epoch_started = 0.0
        self.samples = 0
        self.world = 1  # processes sharing each global batch

    def _print(self, text: str) -> None:
        # the bar is closed at the end of every epoch, before anything is printed
        print(text, file=self.stream, flush=True)

    @hookimpl
    def dlguide_run_start(self, trainer: Trainer) -> None:
        where = (f"resuming at epoch {trainer.epoch + 1} of {trainer.max_epochs}" if trainer.epoch or trainer.batch_in_epoch
                 else f"{trainer.max_epochs} epochs")
        world = self.world = trainer.strategy.world_size
        on = f"{trainer.device}" + (f" x {world} processes ({trainer.strategy.name})" if world > 1 else "")
        self._print(f"{trainer.task.name}: {where} on {on} "
                    f"(precision {trainer.config.precision}) -> {trainer.run_dir.path}")

    @hookimpl
    def dlguide_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.epoch_started = time.perf_counter()
        self.next_refresh = self.epoch_started + self.DELAY_S  # no bar, nor any work for one, before then
        self.samples = 0

    def _open_bar(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        assert trainer.train_loader is not None
        self.bar = tqdm(total=trainer.train_loader.num_batches, initial=trainer.batch_in_epoch,
                        desc=f"epoch {trainer.epoch + 1}/{trainer.max_epochs}", unit="batch", file=self.stream,
                        leave=False, mininterval=self.REFRESH_S, ncols=self.ncols)
        self.ncols = self.bar.ncols  # the terminal's width is asked once per run

    @hookimpl
    def dlguide_train_batch_end(self, trainer: Trainer, batch_idx: int, loss: Any) -> None:
        self.samples += trainer.last_batch_size * self.world  # every process takes as many
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if now < self.next_refresh:
            if self.bar is not None:
                self.bar.update(1)
            return
        self.next_refresh = now + self.REFRESH_S
        if self.bar is None:
            self._open_bar(trainer)  # counts the batches done so far, this one included
        else:
            self.bar.update(1)
        if loss is not None:
            rate = self.samples / max(now - self.epoch_started, 1e-9)
            self.bar.set_postfix_str(f"loss={float(loss):.4f} {rate:,.0f} samples/s", refresh=False)

    @hookimpl
    def dlguide_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self._close_bar()  # gone from the screen (if it was ever drawn) before the epoch's line
        if self.mode == "none":
            return
        seconds = time.perf_counter() - self.epoch_started
        shown = "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k.count("/") == 1)
        self._print(f"epoch {epoch}/{trainer.max_epochs}  {shown}  ({seconds:.1f}s, "
                    f"{self.samples / max(seconds, 1e-9):,.0f} samples/s)")
        reason = getattr(trainer, "stop_reason", None)
        if trainer.should_stop and reason:
            self._print(reason)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @hookimpl
    def dlguide_run_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._close_bar()
        if self.mode == "none":
            return
        # per-class values (test/recall/<class>) stay in metrics.json; the table keeps one row per metric
        table = format_table({k: v for k, v in metrics.items() if k.count("/") == 1}, trainer.run_dir.path)
        if "best_epoch" in metrics and trainer.history:
            last = trainer.history[-1].get("epoch")
            monitor = trainer.config.monitor
            table = (f"best epoch {metrics['best_epoch']} of {last} by {monitor} (its weights are tested; "
                     f"train/ and val/ are that epoch's)\n{table}")
        self._print(table)

    @hookimpl
    def dlguide_run_exception(self, trainer: Trainer, exception: BaseException) -> None:
        self._close_bar()


def format_table(metrics: dict[str, float], where: Path | None = None) -> str:
    """Final metrics as an aligned two-column table."""
    rows = [(k, _fmt(v) if isinstance(v, float) else str(v)) for k, v in metrics.items()]
    width = max((len(k) for k, _ in rows), default=6)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    if where is not None:
        lines.append(f"run directory: {where}")
    return "\n".join(lines)


def run_plugins(trainer: Trainer) -> dict[str, object]:
    """The built-in plugins of one run, by registration name. Logging and the progress display
    run in the process that writes; early stopping and checkpoints in every process, since each
    must take the same decisions (a checkpoint's state may need every process to gather it)."""
    cfg = trainer.config
    mode = trainer.monitor_mode
    writer = trainer.strategy.is_writer
    plugins: dict[str, object] = {}
    if writer:
        plugins["dlguide.metrics"] = MetricsLogger()
    plugins["dlguide.checkpoint"] = Checkpointer(mode, cfg.checkpoint_interval)
    if cfg.early_stopping_patience > 0:
        plugins["dlguide.early_stopping"] = EarlyStopping(cfg.early_stopping_patience, mode)
    if writer and trainer.progress != "none":
        plugins["dlguide.progress"] = ProgressReporter(trainer.progress)
    return plugins
