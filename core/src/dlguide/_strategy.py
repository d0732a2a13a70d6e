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
    def wrap(self, module: nn.Module, *, automatic_optimization: bool = True) -> nn.Module:
        """Move ``module`` to the device and return the model that training and inference call
        (``automatic_optimization`` false: the task steps its own optimizers, as a GAN does)."""
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

    # -- state ------------------------------------------------------------------------
    #: whether taking or loading the state is a collective every process must enter (FSDP)
    collective_state = False

    def model_state(self, module: nn.Module) -> dict[str, Any]:
        """The module's whole state dict, as one process would have it (for checkpoints and weights)."""
        return module.state_dict()

    def load_model_state(self, module: nn.Module, state: Mapping[str, Any]) -> None:
        """Load a whole state dict saved by ``model_state``."""
        module.load_state_dict(state)

    def optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's whole state dict."""
        return optimizer.state_dict()

    def load_optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                             state: Mapping[str, Any]) -> None:
        """Load an optimizer state saved by ``optimizer_state``."""
        optimizer.load_state_dict(state)

    def evaluation(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Around forward passes that processes make in different numbers (an evaluation share,
        pictures drawn by the first process): a sharded model is gathered whole first."""
        return contextlib.nullcontext()

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


_groups_started = 0  # process groups this process has started (each under its own store prefix)


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
        self._average_at_step = False  # gradients averaged in optimizer_step, not by a DDP wrapper

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
            raise UsageError(f"strategy {self.name} runs on cpu (gloo) or cuda (nccl), not {device.type}")
        self.device = device
        if not dist.is_initialized():  # a run inside a run (or a second setup) reuses the group
            if "MASTER_ADDR" not in os.environ:
                raise UsageError("strategy ddp needs processes started by torchrun or "
                                 "'dlguide run TASK --nproc-per-node N'")
            # the store torchrun's agent serves outlives a group: keys of an earlier one (a failed
            # attempt's before --max-restarts restarted the workers, a finished run's before the
            # next run in the same processes) would be read by the new group, a dead or departed
            # process's address among them, so each group keeps its keys under its own prefix
            store, rank, world = next(dist.rendezvous("env://"))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            global _groups_started
            _groups_started += 1  # every process starts its groups in the same order
            prefix = f"dlguide/attempt_{attempt}/group_{_groups_started}"
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                    store=dist.PrefixStore(prefix, store))
            self._started_group = True

    def teardown(self) -> None:
        import torch.distributed as dist

        if self._started_group and dist.is_initialized():
            dist.destroy_process_group()
            self._started_group = False

    def _placed(self, module: nn.Module) -> tuple[nn.Module, bool]:
        """``module`` on this process's device (with SyncBatchNorm layers when asked for), and
        whether it has anything to train: a model without (counted popularity, ALS factors) is not wrapped."""
        module = module.to(self.device)
        if self.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return module, any(p.requires_grad for p in module.parameters())

    def wrap(self, module: nn.Module, *, automatic_optimization: bool = True) -> nn.Module:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        module, trainable = self._placed(module)
        if not trainable:
            return module
        if not automatic_optimization:
            # a task that steps several optimizers over parts of one model (a GAN's discriminator
            # alone, then the generator through it) breaks DDP's one-forward-one-backward
            # bookkeeping; its gradients are averaged at each optimizer step instead, which is
            # what DDP computes, and the processes start from the first one's weights
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
            self._average_at_step = True
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

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                       clip_norm: float = 0.0) -> None:
        if self._average_at_step:
            self._average_gradients(optimizer)
        super().optimizer_step(optimizer, scaler, clip_norm)

    def _average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of ``optimizer``'s parameters over the processes, in one all-reduce."""
        import torch.distributed as dist

        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

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


class FSDPStrategy(DDPStrategy):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) on CUDA: each process keeps one shard of
    every parameter, gradient and optimizer state, and gathers a layer's parameters only
    around its forward and backward passes. Each direct child of the model with parameters is
    one unit, the model the root.

    Checkpoints hold the whole state, gathered into the first process (every process takes
    part); ``model.safetensors`` is the whole model, as after any other strategy. Evaluation
    and pictures run on the gathered model, so processes may make different numbers of
    forward passes there. Optimizer states are saved under parameter names, so a run saved
    under fsdp resumes under fsdp.
    """

    name = "fsdp"
    collective_state = True
    cpu_allowed = False  # gloo runs it too; users are sent to ddp on cpu, tests use it here

    def setup(self) -> None:
        super().setup()
        if self.device.type != "cuda" and not self.cpu_allowed:
            raise UsageError("strategy fsdp (FSDP2's fully_shard) runs on CUDA devices; on cpu use strategy=ddp")

    def wrap(self, module: nn.Module, *, automatic_optimization: bool = True) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        module, trainable = self._placed(module)
        if not trainable:
            return module
        for child in module.children():
            if any(p.requires_grad for p in child.parameters()):
                fully_shard(child)
        fully_shard(module)  # in place: the module is its own wrapper
        return module

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Any:
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(model, FSDPModule):
            yield
            return
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    @staticmethod
    def _options(**kwargs: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kwargs)

    def model_state(self, module: nn.Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        # gathered on the CPU of the first process; the others get an empty dict
        return get_model_state_dict(module, options=self._options(cpu_offload=True))

    def load_model_state(self, module: nn.Module, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(module, dict(state), options=self._options())

    def optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(module, optimizer, options=self._options(cpu_offload=True))

    def load_optimizer_state(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                             state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(module, optimizer, dict(state), options=self._options())

    @contextlib.contextmanager
    def evaluation(self, model: nn.Module) -> Any:
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:  # one all-gather per unit, in every process; then no collective per forward
            unit.unshard()
            unit.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` from every process of the run, concatenated along the first dimension in
    process order; the tensor itself when one process runs.

    For metrics that keep per-sample values (per-case Dice, scores for an AUC): each process
    holds the samples of its share, which may be none, and only the first dimension may differ.
    Every process must call it, the same number of times: it is a collective.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = tensor.dtype == torch.bool  # not every backend gathers booleans
    local = (tensor.to(torch.uint8) if flag else tensor).to(device).contiguous()
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.cat([part[:n] for part, n in zip(parts, counts)])
    return (out.bool() if flag else out).to(tensor.device)


def check_global_batch(batch_size: int, world: int) -> None:
    """``batch_size`` is the global batch: it must divide among every process of every machine."""
    if batch_size % world:
        raise UsageError(f"batch_size {batch_size} is the global batch and must divide among {world} processes; "
                         f"choose a multiple of {world}")


def check_distributed(config: Any, world: int) -> str:
    """The strategy ``config`` asks for at ``world`` processes, or a UsageError said once, before
    any worker starts (the launcher) or in each of torchrun's own workers."""
    name = config.strategy
    if name == "auto":
        name = "ddp" if world > 1 else "single"
    if name == "single":
        if world > 1:
            raise UsageError(f"strategy single runs one process, but {world} were started; use strategy=ddp")
        return name
    check_global_batch(config.batch_size, world)
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
    if device in ("auto", "cpu") and name == "fsdp":
        raise UsageError("strategy fsdp (FSDP2's fully_shard) runs on CUDA devices; on cpu use strategy=ddp")
    if device in ("auto", "cpu") and config.sync_batchnorm:
        raise UsageError("sync_batchnorm=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); on cpu "
                         "leave it false: each process then normalises its own part of the batch")
    return name


def make_strategy(config: Any) -> Strategy:
    """The strategy a config asks for: ``auto`` is ddp when torchrun started several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    name = check_distributed(config, world)
    if name == "single":
        return SingleDeviceStrategy(config.device)
    if name == "fsdp":
        return FSDPStrategy(config.device, config.sync_batchnorm)
    return DDPStrategy(config.device, config.sync_batchnorm)
