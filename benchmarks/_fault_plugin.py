"""Loaded by every run of benchmarks/faults.py (``DLGUIDE_PLUGINS=_fault_plugin``): sends this
process ``FAULT_SIGNAL`` (default SIGTERM) at the stage ``FAULT_STAGE`` of epoch ``FAULT_EPOCH``,
once (``FAULT_ONCE`` names a file that marks it done, so the resumed run is left alone)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from dlguide import hookimpl

STAGE = os.environ.get("FAULT_STAGE", "")
EPOCH = int(os.environ.get("FAULT_EPOCH", "1"))
SIGNAL = int(os.environ.get("FAULT_SIGNAL", str(int(signal.SIGTERM))))
ONCE = Path(os.environ.get("FAULT_ONCE", "/nonexistent/fault-once"))


def _fire(stage: str, epoch: int) -> None:
    if stage == STAGE and epoch == EPOCH and not ONCE.exists():
        ONCE.touch()
        os.kill(os.getpid(), SIGNAL)


@hookimpl
def dlguide_run_start(trainer: Any) -> None:
    _fire("run_start", trainer.epoch + 1)


@hookimpl
def dlguide_epoch_start(trainer: Any, epoch: int) -> None:
    _fire("epoch_start", epoch)


@hookimpl
def dlguide_train_batch_end(trainer: Any, batch_idx: int, loss: Any) -> None:
    if batch_idx == 1:
        _fire("first_batches", trainer.epoch + 1)
    if batch_idx + 1 == trainer.train_loader.num_batches:
        _fire("last_batch", trainer.epoch + 1)


@hookimpl
def dlguide_epoch_end(trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
    _fire("epoch_end", epoch)  # after validation, before the epoch's checkpoint


@hookimpl
def dlguide_checkpoint_saved(trainer: Any, path: Path, kind: str) -> None:
    if kind == "last":
        _fire("checkpoint_saved", trainer.epoch)
