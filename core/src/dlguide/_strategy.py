"""Where a run computes and how its processes agree: the Strategy.

The Trainer never touches a device, a process group or a model wrapper itself; it asks its
Strategy (Lightning's ``Strategy``, nanoGPT's few lines of DDP). ``SingleDeviceStrategy``
is the default: one process, one device, the model unwrapped. A multi-process strategy
(DDP, FSDP2) plugs in behind the same methods without any change to tasks, as long as tasks
call their networks through ``self.model`` (the wrapped model) and reach the bare module's
own methods through ``self.module``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from dlguide._data import resolve_device, to_device


class Strategy:
    """One run's device placement, model wrapping, backward pass, optimizer step, reductions,
    barriers, and the rule that only the first process writes.

    Subclasses override what differs; every method here is correct for one process.
    """

    name = "base"

    def __init__(self, device: str = "auto") -> None:
        self.requested_device = device
        self.device = torch.device("cpu")

    # -- processes --------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        """Processes taking part in the run."""
        return 1

    @property
    def rank(self) -> int:
        """This process's index among them (0 for the first)."""
        return 0

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run directory, logs and checkpoints (only the first does)."""
        return self.rank == 0

    def setup(self) -> None:
        """Pick the device (a missing one is a usage error) and start whatever the strategy needs."""
        self.device = resolve_device(self.requested_device)

    def teardown(self) -> None:
        """Release what ``setup`` started."""

    # -- model and data ---------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the device and return the model that training and inference call."""
        return module.to(self.device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The bare module behind a wrapped model (its state dict, its own methods)."""
        return model

    def batch_to_device(self, batch: Any) -> Any:
        """Every tensor of ``batch`` on this process's device."""
        return to_device(batch, self.device, non_blocking=True)

    # -- steps ------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, scaler: torch.amp.GradScaler | None = None) -> None:
        """Backpropagate ``loss``, through the grad scaler when one is active."""
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Gradients of an accumulation step that is not the last stay local (DDP's ``no_sync``)."""
        return contextlib.nullcontext()

    def clip_gradients(self, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
        """Clip the global norm of ``optimizer``'s gradients."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                       clip_norm: float = 0.0) -> None:
        """Unscale (with a scaler), clip (``clip_norm`` > 0) and step one optimizer."""
        if clip_norm > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            self.clip_gradients(optimizer, clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    # -- agreement between processes --------------------------------------------------
    def reduce_sums(self, sums: Mapping[str, float], count: int) -> tuple[dict[str, float], int]:
        """Per-sample sums of logged values and their sample count, added up over processes."""
        return dict(sums), count

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def broadcast(self, obj: Any) -> Any:
        """The first process's ``obj``, on every process."""
        return obj

    @contextlib.contextmanager
    def writer_first(self) -> Iterator[None]:
        """The first process runs the block (it writes a shared file) before the others read it."""
        if not self.is_writer:
            self.barrier()
        yield
        if self.is_writer:
            self.barrier()


class SingleDeviceStrategy(Strategy):
    """One process on one device (``auto``: cuda, then mps, then cpu); the model is not wrapped."""

    name = "single"
