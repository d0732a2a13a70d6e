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
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dlguide._data import resolve_device, to_device
from dlguide._errors import UsageError


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
        """Pick the device (a missing one is a usage error) and start whatever the strategy needs;
        called again for the same run, it changes nothing."""
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

    def agree(self, flags: tuple[bool, ...]) -> tuple[bool, ...]:
        """Each flag true if it is true in any process: decisions every process must take together
        (stop on a signal, stop on a NaN), so that none waits in a collective the others left."""
        return flags

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def broadcast(self, obj: Any) -> Any:
        """The first process's ``obj``, on every process."""
        return obj


class SingleDeviceStrategy(Strategy):
    """One process on one device (``auto``: cuda, then mps, then cpu); the model is not wrapped."""

    name = "single"


class DDPStrategy(Strategy):
    """One process per device, started by ``torchrun`` (or ``dlguide run --nproc-per-node N``),
    gradients averaged by ``DistributedDataParallel``: gloo on CPUs, nccl on CUDA with
    ``cuda:LOCAL_RANK`` per process. The process group is read from torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Buffers are not synced at every forward pass (``forward_sync_buffers=False``): an
    evaluation pass may take more batches in one process than in another, and a broadcast
    there would wait for ever; ``sync_batchnorm`` keeps batch-norm statistics in step instead.
    A model with no trainable parameter (counted popularity, ALS factors) is not wrapped.
    """

    name = "ddp"

    def __init__(self, device: str = "auto", sync_batchnorm: bool = False) -> None:
        super().__init__(device)
        self.sync_batchnorm = sync_batchnorm
        self._started_group = False

    @property
    def world_size(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))

    @property
    def rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))

    def setup(self) -> None:
        import torch.distributed as dist

        device = resolve_device(self.requested_device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise UsageError(f"strategy ddp runs on cpu (gloo) or cuda (nccl), not {device.type}")
        self.device = device
        if not dist.is_initialized():  # a run inside a run (or a second setup) reuses the group
            if "MASTER_ADDR" not in os.environ:
                raise UsageError("strategy ddp needs processes started by torchrun or "
                                 "'dlguide run TASK --nproc-per-node N'")
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self._started_group = True

    def teardown(self) -> None:
        import torch.distributed as dist

        if self._started_group and dist.is_initialized():
            dist.destroy_process_group()
            self._started_group = False

    def wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        module = module.to(self.device)
        if self.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device] if self.device.type == "cuda" else None
        import inspect

        # torch 2.10 renamed the switch; either way buffers are synced once, at construction
        switch = "forward_sync_buffers"
        if switch not in inspect.signature(DistributedDataParallel).parameters:
            switch = "broadcast_buffers"
        return DistributedDataParallel(module, device_ids=ids, **{switch: False})

    def unwrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return model.module if isinstance(model, DistributedDataParallel) else model

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        from torch.nn.parallel import DistributedDataParallel

        return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()

    def reduce_sums(self, sums: Mapping[str, float], count: int) -> tuple[dict[str, float], int]:
        import torch.distributed as dist

        keys = sorted(sums)
        # the same keys in every process: a task logs the same values on every batch
        values = torch.tensor([float(count), *(float(sums[k]) for k in keys)], dtype=torch.float64,
                              device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(values)
        total = values.tolist()
        return dict(zip(keys, total[1:])), int(round(total[0]))

    def agree(self, flags: tuple[bool, ...]) -> tuple[bool, ...]:
        import torch.distributed as dist

        values = torch.tensor([float(f) for f in flags], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in values.tolist())

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def check_global_batch(batch_size: int, world: int) -> None:
    """``batch_size`` is the global batch: it must divide among every process of every machine."""
    if batch_size % world:
        raise UsageError(f"batch_size {batch_size} is the global batch and must divide among {world} processes; "
                         f"choose a multiple of {world}")


def make_strategy(config: Any) -> Strategy:
    """The strategy a config asks for: ``auto`` is ddp when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = config.strategy
    if name == "auto":
        name = "ddp" if world > 1 else "single"
    if name == "single":
        if world > 1:
            raise UsageError(f"strategy single runs one process, but {world} were started; use strategy=ddp")
        return SingleDeviceStrategy(config.device)
    check_global_batch(config.batch_size, world)  # the launcher checks first; torchrun's own workers here
    return DDPStrategy(config.device, config.sync_batchnorm)
