"""What a task sees of the run in progress: a small context instead of the whole Trainer.

A task reads where it writes, how far the run is and whether this process writes; it can
ask the run to stop; and a task that steps its own optimizers (a GAN) backpropagates and
steps through the run's Strategy, precision and schedules here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dlguide._plugins import Runtime
    from dlguide._trainer import Trainer


class RunContext:
    """The run a task is part of (``task.run``), set while the run trains, validates and tests
    (None on a finished run loaded for inference)."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        return self._trainer.run_dir.path

    @property
    def epoch(self) -> int:
        """Epochs completed so far (0 during the first)."""
        return self._trainer.epoch

    @property
    def max_epochs(self) -> int:
        """Epochs the run trains in all (the config's ``epochs``, or the new value on an extended resume)."""
        return self._trainer.max_epochs

    @property
    def global_step(self) -> int:
        """Optimizer steps so far (training batches, for a task that steps its optimizers itself)."""
        return self._trainer.global_step

    @property
    def device(self) -> torch.device:
        """The device this process trains on; batches arrive in the steps already moved there."""
        return self._trainer.strategy.device

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files (only the first of several does)."""
        return self._trainer.strategy.is_writer

    @property
    def rank(self) -> int:
        """This process's index among the run's processes (0 for the first, and for a single process)."""
        return self._trainer.strategy.rank

    @property
    def world_size(self) -> int:
        """Processes taking part in the run (1 unless started with several)."""
        return self._trainer.strategy.world_size

    @property
    def batch_rows(self) -> tuple[int, int, int]:
        """During a training step: ``(begin, end, global_size)``, the rows of the global batch that
        this process holds (``(0, n, n)`` in a single process). Per-sample random draws made for
        the whole global batch, then sliced to these rows, are the same at any number of processes."""
        return self._trainer.batch_rows

    def broadcast(self, obj: Any) -> Any:
        """The first process's ``obj`` on every process (itself in a single process): for work
        that only the first process does, such as fitting with a library that has no
        distributed mode. Every process must call it at the same point."""
        return self._trainer.strategy.broadcast(obj)

    @property
    def verbose(self) -> bool:
        """Whether this process prints the run's progress (a task's own notes should follow it):
        only the first of several processes does."""
        return self._trainer.progress != "none" and self._trainer.strategy.is_writer

    @property
    def runtime(self) -> Runtime:
        """The plugins and registry of this run: a run started inside it (``run_task``, ``load_run``)
        should use the same ones."""
        return self._trainer.runtime

    @property
    def progress(self) -> str:
        """The run's progress mode (``auto``, ``bar``, ``log`` or ``none``), for runs started inside it."""
        return self._trainer.progress

    def record(self, **columns: Any) -> None:
        """In ``test_step``: per-sample outcomes of the batch, one value per sample in the batch's
        order (``correct=pred == y``, ``loss=...`` with ``reduction="none"``, a user's ``ndcg``, a
        case's ``dice``). They are saved as ``outcomes.safetensors`` so that ``dlguide compare``
        can test two runs sample by sample; outside a test pass the call does nothing."""
        if self._trainer.outcomes is not None:
            self._trainer.outcomes.record(columns)

    def stop(self, reason: str) -> None:
        """End the run after the current epoch, saying ``reason`` (early stopping does the same)."""
        self._trainer.should_stop = True
        self._trainer.stop_reason = reason

    # -- for tasks that step their optimizers themselves ---------------------------------
    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The run's optimizers, in the order ``configure_optimizers`` returned them."""
        return list(self._trainer.optimizers)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The run's precision (bf16 or fp16 autocast, or nothing)."""
        return self._trainer.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate through the Strategy (and the grad scaler under 16-mixed)."""
        self._trainer.backward(loss)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, *, zero_grad: bool = True) -> None:
        """Unscale, clip, step ``optimizer``, zero its gradients and advance its schedule."""
        self._trainer.optimizer_step(optimizer, zero_grad=zero_grad)
