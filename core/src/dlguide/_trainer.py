"""The Trainer: one loop for every Task.

It owns the loop, the device, precision, gradient accumulation and clipping, seeding,
checkpoints and exact resume; nothing domain-specific. Everything a person sees
(progress, logs, checkpoints, early stopping) is a hook implementation from
``dlguide._callbacks`` registered for the length of the run, so plugins can observe or
extend any run through the same hooks.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlguide import _callbacks as builtin
from dlguide._checkpoint import (BackgroundWriter, atomic_link, atomic_save, atomic_write, capture_rng, load_checkpoint,
                                restore_rng, seed_everything, serialize, stamp, unsafe_entry)
from dlguide._config import to_dict
from dlguide._context import RunContext
from dlguide._data import SeededLoader, model_device
from dlguide._errors import CheckpointError, RunError, RunInterrupted, UsageError
from dlguide._optim import Schedule, build_optimizer
from dlguide._outcomes import FILE as OUTCOMES_FILE
from dlguide._outcomes import OutcomeRecorder, write_outcomes
from dlguide._plugins import Runtime, get_runtime
from dlguide._rundir import RunDir, unique_temporary
from dlguide._strategy import Strategy, make_strategy
from dlguide._task import Task


def flatten_metrics(prefix: str, values: Mapping[str, Any], names: list[str] | None) -> dict[str, float]:
    """``{"acc": t(0.9), "recall": t([.8, .9])}`` -> ``{"val/acc": .9, "val/recall/cat": .8, ...}``.

    Matrices (a confusion matrix) are left out: the task draws them as pictures.
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        t = torch.as_tensor(value).detach().float().cpu()
        if t.dim() == 0:
            out[f"{prefix}/{key}"] = float(t)
        elif t.dim() == 1:
            for i, v in enumerate(t.tolist()):
                label = names[i] if names and i < len(names) else str(i)
                out[f"{prefix}/{key}/{label}"] = float(v)
    return out


class Trainer:
    """Runs one Task into one run directory.

    The run has its own plugin manager (``self.pm``): the installed plugins, ``plugins`` given
    here (a tuning trial's pruner) and, while it trains, its built-in callbacks; a run started
    inside another run is isolated from it. ``strategy`` owns devices and processes
    (``SingleDeviceStrategy`` on the config's ``device`` by default).
    """

    def __init__(self, task: Task, run_dir: RunDir, *, runtime: Runtime | None = None,
                 progress: str = "auto", strategy: Strategy | None = None,
                 plugins: Mapping[str, object] | None = None) -> None:
        self.task = task
        self.config = task.config
        self.run_dir = run_dir
        self.runtime = runtime or get_runtime()
        self.pm = self.runtime.run_manager(plugins or {})
        self.hook = self.pm.hook
        self.progress = progress
        self.strategy = strategy or make_strategy(task.config)
        self.monitor_mode = task.monitor_mode()
        self.stop_reason: str | None = None
        self.last_batch_size = 0
        self.batch_rows = (0, 0, 0)  # this process's rows of the current global training batch
        task.run = RunContext(self)
        task.run_dir = run_dir.path
        cfg = self.config
        if cfg.fast_dev_run:
            self.max_epochs, self.limit_train, self.limit_eval = 1, 1, 1
        else:
            self.max_epochs = cfg.epochs
            self.limit_train, self.limit_eval = cfg.limit_train_batches, cfg.limit_eval_batches
        self.epoch = 0  # completed epochs
        self.global_step = 0  # optimizer steps (training batches in manual optimization)
        self.batch_in_epoch = 0  # training batches done in the current epoch
        self.should_stop = False
        self.history: list[dict[str, float]] = []
        self._unused: dict[str, dict[str, Any]] = {}  # metrics made before their first pass
        self.outcomes: OutcomeRecorder | None = None  # during a test pass
        self.last_outcomes: dict[str, torch.Tensor] = {}
        self._partial: dict[str, Any] = {}
        self._stop_signal: int | None = None
        self._stop_agreed = False  # several processes: whether any of them was asked to stop (see _check_finite)
        self.distributed = False  # more than one process: stop decisions are agreed between them
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedules: list[Schedule] = []
        self.scaler: torch.amp.GradScaler | None = None
        self.model: nn.Module | None = None  # as the strategy wrapped it: what forward passes call
        self.module: nn.Module | None = None  # the bare module: its state dict
        self.checkpoint_writer = BackgroundWriter()
        self._metrics: dict[str, dict[str, Any]] = {}  # per stage, made once and reset before each pass

    # -- setup ---------------------------------------------------------------------
    def _setup(self, with_train: bool = True) -> None:
        cfg = self.config
        seed_everything(cfg.seed, cfg.deterministic)
        self.strategy.setup()
        self.device = self.strategy.device
        self.distributed = self.strategy.world_size > 1
        self.splits = self.task.build_data()
        self.model = self.strategy.wrap(self.task.build_model(), automatic_optimization=self.task.automatic_optimization)
        self.module = self.strategy.unwrap(self.model)
        self.task.model, self.task.module = self.model, self.module
        pin = self.device.type == "cuda"

        def loader(ds: Any, shuffle: bool, limit: int) -> SeededLoader | None:
            if ds is None:
                return None
            # batch_size is the global batch: each of several processes takes its part of it
            return SeededLoader(ds, cfg.batch_size, shuffle, cfg.seed, cfg.num_workers, pin, limit,
                                collate_fn=self.task.collate, rank=self.strategy.rank,
                                world=self.strategy.world_size, evaluation=not shuffle)

        self.train_loader = loader(self.splits.train, True, self.limit_train) if with_train else None
        self.val_loader = loader(self.splits.val, False, self.limit_eval)
        self.test_loader = loader(self.splits.test, False, self.limit_eval)
        if cfg.precision == "bf16":
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        elif cfg.precision == "16-mixed":
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.float16)
            if self.device.type == "cuda":
                self.scaler = torch.amp.GradScaler("cuda")
        else:
            self.autocast = contextlib.nullcontext
        if not with_train:
            return
        opts = self.task.configure_optimizers()
        if opts is None:
            opts = [build_optimizer(cfg, self.module.parameters())]
        self.optimizers = list(opts) if isinstance(opts, (list, tuple)) else [opts]
        assert self.train_loader is not None
        steps = self.train_loader.num_batches
        if self.task.automatic_optimization:
            steps = math.ceil(steps / cfg.accumulate_grad_batches)
        self.steps_per_epoch = max(1, steps)
        # built from this config before any checkpoint is restored: the base rates are the config's
        self.schedules = [Schedule(cfg, opt, self.steps_per_epoch, self.monitor_mode) for opt in self.optimizers]

    # -- checkpoints ---------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it stands."""
        assert self.module is not None
        ckpt: dict[str, Any] = {
            "dlguide": stamp(self.task.name),
            "config": to_dict(self.config),
            "meta": dict(self.task.meta),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "partial": {k: dict(v) if isinstance(v, dict) else v for k, v in self._partial.items()},
            "history": list(self.history),
            "model": self.strategy.model_state(self.module),
            "optimizers": [self.strategy.optimizer_state(self.module, o) for o in self.optimizers],
            "schedules": [s.state_dict() for s in self.schedules],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng(),
            "callbacks": {},
        }
        self._plugins_save(ckpt)
        return ckpt

    def _plugins_save(self, ckpt: dict[str, Any]) -> None:
        """Let each plugin add its state, checking after each that a checkpoint can still be
        loaded safely: a value ``weights_only`` loading refuses stops the run now, naming the
        plugin and the key, with the previous checkpoint kept (not at the end, as a corrupt file)."""
        core = ("model", "optimizers", "schedules", "rng")  # built here, of tensors and numbers

        def check(plugin: str) -> None:
            found = unsafe_entry({k: v for k, v in ckpt.items() if k not in core})
            if found:
                where, kind = found
                raise CheckpointError(f"{plugin} put a {kind} at {where}, which a checkpoint cannot hold "
                                      "(weights_only loading refuses it; keep tensors, numbers, strings, lists and "
                                      "dicts there); run stopped, the previous checkpoint kept")

        impls = self.hook.dlguide_save_checkpoint.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):  # wrappers only run through pluggy
            self.hook.dlguide_save_checkpoint(trainer=self, checkpoint=ckpt)
            check("a plugin")
            return
        for impl in reversed(impls):  # pluggy's call order
            impl.function(**{name: {"trainer": self, "checkpoint": ckpt}[name] for name in impl.argnames})
            check(f"plugin {impl.plugin_name!r}")

    def save_checkpoint(self, path: Path, kind: str, same_as: Path | None = None, *,
                        background: bool = False, state: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint atomically and tell the plugins; ``same_as`` names a checkpoint
        just written for this same state, which is linked instead of serialised again, and
        ``state`` is one taken earlier with ``checkpoint_state`` (the current one otherwise).

        With ``background`` the state is serialized now and the bytes are written on the
        checkpoint thread while training goes on (in order with earlier writes;
        ``dlguide_checkpoint_saved`` is then called from that thread). Otherwise earlier
        background writes finish first. Only the first of several processes writes.
        """
        if not self.strategy.is_writer:
            if self.strategy.collective_state and same_as is None and state is None:
                self.checkpoint_state()  # the first process's state is gathered from every process
            return path
        if same_as is not None:
            def write() -> None:
                atomic_link(same_as, path)
        else:
            self.checkpoint_writer.wait()  # writes stay in order, with at most one state in flight
            if state is None:
                state = self.checkpoint_state()
            if background:
                data = serialize(state)

                def write() -> None:
                    atomic_write(data, path)
            else:
                def write() -> None:
                    atomic_save(state, path)

        def job() -> None:
            write()
            self.hook.dlguide_checkpoint_saved(trainer=self, path=path, kind=kind)

        if background:
            self.checkpoint_writer.submit(job)
        else:
            job()
        return path

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.task.name)
        assert self.module is not None
        try:
            self.strategy.load_model_state(self.module, ckpt["model"])
            if len(ckpt["optimizers"]) != len(self.optimizers):
                raise CheckpointMismatch(f"{len(ckpt['optimizers'])} optimizers, the task has {len(self.optimizers)}")
            for opt, state in zip(self.optimizers, ckpt["optimizers"]):
                self.strategy.load_optimizer_state(self.module, opt, state)
            for sched, state in zip(self.schedules, ckpt["schedules"]):
                # the schedule is recomputed from this config at the saved step: a changed lr or
                # a longer run takes effect (checkpoints of format 1 kept scheduler objects)
                sched.load_state_dict(state if "steps" in state else {"steps": int(ckpt["global_step"])})
        except (RuntimeError, ValueError, KeyError, CheckpointMismatch) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not fit this task's model: {first[:200]}") from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self._partial = dict(ckpt.get("partial") or {})
        self.history = list(ckpt.get("history") or [])
        self.hook.dlguide_load_checkpoint(trainer=self, checkpoint=ckpt)
        restore_rng(ckpt["rng"])

    # -- signals -------------------------------------------------------------------
    @contextlib.contextmanager
    def _catch_signals(self) -> Iterator[None]:
        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            yield
        finally:
            for sig, prev in previous.items():
                signal.signal(sig, prev)

    def _interrupt(self) -> None:
        signum = self._stop_signal or signal.SIGINT
        checkpointer = self.pm.get_plugin("dlguide.checkpoint")
        if checkpointer is not None:  # the best epoch kept in memory goes first: last.ckpt names it
            checkpointer.flush_best(self)
        path = self.save_checkpoint(self.run_dir.last_ckpt, "interrupt")
        name = signal.Signals(signum).name
        raise RunInterrupted(
            f"{name} received at epoch {self.epoch + 1}, batch {self.batch_in_epoch}; checkpoint saved to {path}; "
            f"continue with: dlguide resume {self.run_dir.path}", signum)

    # -- the loop ------------------------------------------------------------------
    def fit(self, ckpt_path: Path | None = None) -> dict[str, float]:
        """Train for ``epochs`` (continuing from ``ckpt_path`` if given), then test; return final metrics."""
        rng = capture_rng()  # the caller's random stream, given back at the end (a run inside a run)
        self._setup()
        self._check_monitor()
        cfg = self.config
        plugins = builtin.run_plugins(self)
        for name, plugin in plugins.items():
            self.pm.register(plugin, name=name)
        try:
            if ckpt_path is not None:
                self._restore(ckpt_path)
                if self.strategy.is_writer:
                    self.run_dir.truncate_epochs(self.epoch)
            if self.strategy.is_writer:
                self.run_dir.write_config(self.task.name, to_dict(cfg))
                self.run_dir.write_meta(self.task.meta)
            with self._catch_signals():
                self.task.on_fit_start()
                self.hook.dlguide_run_start(trainer=self)
                while self.epoch < self.max_epochs and not self.should_stop:
                    self.hook.dlguide_epoch_start(trainer=self, epoch=self.epoch + 1)
                    metrics = self._train_epoch()
                    if self.val_loader is not None:
                        metrics.update(self._evaluate("val", self.val_loader))
                    metrics["epoch"] = self.epoch + 1
                    metrics["lr"] = self.optimizers[0].param_groups[0]["lr"]
                    monitored = metrics.get(cfg.monitor)
                    for sched in self.schedules:
                        sched.epoch_end(monitored)
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._partial = {}
                    self.history.append(metrics)
                    with self.strategy.evaluation(self.model):  # a task may draw with the model here
                        self.task.on_epoch_end(self.epoch, metrics)
                    self.hook.dlguide_epoch_end(trainer=self, epoch=self.epoch, metrics=metrics)
                    if self._stop_requested():
                        self._interrupt()
                final = self._finish()
            self.hook.dlguide_run_end(trainer=self, metrics=final)
            self.strategy.barrier()  # every process is done before any leaves the process group
            self.strategy.teardown()  # not on an error: a peer may have gone, and leaving would fail instead
            return final
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the error in flight is the one to report
                self.checkpoint_writer.close()
            self.hook.dlguide_run_exception(trainer=self, exception=exc)
            if self.distributed and isinstance(exc, RunError):  # an agreed stop: every process is here
                with contextlib.suppress(Exception):
                    self.strategy.barrier()
                    self.strategy.teardown()
            raise
        finally:
            self.checkpoint_writer.close()
            for name in plugins:
                self.pm.unregister(name=name)
            restore_rng(rng)

    def _train_epoch(self) -> dict[str, float]:
        cfg, task, model = self.config, self.task, self.model
        assert model is not None and self.train_loader is not None
        model.train()
        automatic = task.automatic_optimization
        accum = cfg.accumulate_grad_batches if automatic else 1
        sums = {k: scalar(v) for k, v in self._partial.get("sums", {}).items()}  # the epoch so far, when resumed
        count = int(self._partial.get("count", 0))
        partial = self._partial = {"sums": sums, "count": count}  # kept up to date for a checkpoint mid-epoch
        start = self.batch_in_epoch
        n_batches = self.train_loader.num_batches
        to_device, autocast, batch_end = self.strategy.batch_to_device, self.autocast, self.hook.dlguide_train_batch_end
        no_sync = self.strategy.no_sync
        rows = self.train_loader.sampler.rows
        for batch_idx, batch in enumerate(self.train_loader.epoch(self.epoch, start), start=start):
            batch = to_device(batch)
            self.batch_rows = rows(batch_idx)
            n = task.batch_size_of(batch)
            if automatic:
                optimizer = self.optimizers[0]
                # the last, short accumulation window is averaged over the batches it has
                window = min(accum, n_batches - (batch_idx // accum) * accum)
                with autocast():
                    out = task.training_step(batch, batch_idx)
                loss = out if isinstance(out, torch.Tensor) else out["loss"]
                loss_value = self._check_finite(loss, batch_idx)  # read once, before backward
                if batch_idx % accum == 0:
                    # the previous step's gradients go between this forward pass and the backward
                    # pass, as in a plain loop: the backward pass gets back the memory they free
                    # (freed right after the step, it went to this forward pass's activations)
                    optimizer.zero_grad(set_to_none=True)
                steps_now = (batch_idx + 1) % accum == 0 or batch_idx + 1 == n_batches
                weight = 1.0 / window
                if self.distributed:
                    # DDP averages the processes' gradients with equal weights; a global batch that
                    # does not divide evenly (the epoch's last) gives shares of unequal sizes, so each
                    # process's mean loss is weighted by its share, as one process's mean would be
                    begin, end, total = self.batch_rows
                    weight *= (end - begin) * self.strategy.world_size / total
                scaled = loss * weight if weight != 1.0 else loss
                if steps_now:
                    self.backward(scaled)
                    self.optimizer_step(optimizer, self.schedules[0], zero_grad=False)
                else:  # gradients of a window's earlier batches stay local to the process
                    with no_sync(model):
                        self.backward(scaled)
            else:
                out = task.training_step(batch, batch_idx)
                self.global_step += 1
                loss_value = None
            if loss_value is not None and isinstance(out, torch.Tensor):  # a loss alone, read already
                logged = out.detach()
                sums["loss"] = sums.get("loss", 0.0) + loss_value * n
            else:
                logs = out if isinstance(out, Mapping) else {"loss": out}
                logs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}
                for key, value in logs.items():
                    if key == "loss" and loss_value is not None:
                        number = loss_value
                    elif automatic:
                        number = scalar(value)
                    else:  # a task that drives its optimizers: every value it logs is checked
                        number = self._check_finite(value, batch_idx, key)
                    sums[key] = sums.get(key, 0.0) + number * n
                logged = logs.get("loss")
            count += n
            partial["count"] = count
            self.batch_in_epoch = batch_idx + 1
            self.last_batch_size = n
            batch_end(trainer=self, batch_idx=batch_idx, loss=logged)
            stop = self._stop_agreed if self.distributed else self._stop_signal is not None
            if stop and (batch_idx + 1) % accum == 0 and self.batch_in_epoch < n_batches:
                self._interrupt()  # at a step boundary
        sums, count = self.strategy.reduce_sums(sums, count)
        return {f"train/{k}": v / max(count, 1) for k, v in sums.items()}

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate through the Strategy, with the grad scaler when one is active (for manual optimization too)."""
        self.strategy.backward(loss, self.scaler)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, schedule: Schedule | None = None, *,
                       zero_grad: bool = True) -> None:
        """Unscale, clip, step, zero the gradients (unless ``zero_grad`` is false: the Trainer's
        own loop zeroes them before the next backward pass) and advance the schedule of one optimizer."""
        self.strategy.optimizer_step(optimizer, self.scaler, self.config.gradient_clip_norm)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        if schedule is None and optimizer in self.optimizers:
            schedule = self.schedules[self.optimizers.index(optimizer)]
        if schedule is not None:
            schedule.step()
        if self.task.automatic_optimization:
            self.global_step += 1

    def _stop_requested(self) -> bool:
        """Whether a signal asked the run to stop (in any process, agreed by all of them)."""
        if self.distributed:
            return self.strategy.agree((self._stop_signal is not None,))[0]
        return self._stop_signal is not None

    def _check_finite(self, value: Any, batch_idx: int, key: str = "loss") -> float:
        """``value`` as a number (a tensor's mean), or RunError when it is NaN or infinite.

        Among several processes the verdict is agreed before any backward pass, together with
        whether any process was asked to stop: every process stops at the same step, none is
        left waiting in a collective.
        """
        number = scalar(value)  # one read: the device sync that an isfinite check would cost anyway
        finite = math.isfinite(number)
        if self.distributed:
            bad, self._stop_agreed = self.strategy.agree((not finite, self._stop_signal is not None))
            if bad and finite:
                with contextlib.suppress(Exception):
                    self.checkpoint_writer.wait()
                raise RunError(f"{key} is not finite in another process at epoch {self.epoch + 1}, batch "
                               f"{batch_idx}, step {self.global_step}; run stopped")
        if not finite:
            with contextlib.suppress(Exception):
                self.checkpoint_writer.wait()  # the last good checkpoint may still be on its way
            last = self.run_dir.last_ckpt
            kept = (f"last good checkpoint kept: {last}" if last.exists() else
                    f"no checkpoint had been written yet; 'dlguide resume {self.run_dir.path}' starts it again")
            raise RunError(
                f"{key} is {number} at epoch {self.epoch + 1}, batch {batch_idx}, "
                f"step {self.global_step}; run stopped, {kept}")
        return number

    @torch.no_grad()
    def _evaluate(self, stage: str, loader: SeededLoader) -> dict[str, float]:
        task, model = self.task, self.model
        assert model is not None
        metrics = self.make_metrics(stage)
        task.on_evaluation_start(stage)
        model.eval()
        loss_sum: Any = 0.0
        count = 0
        step = task.validation_step if stage == "val" else task.test_step
        on_cpu = self.device.type == "cpu"  # a loss read at once costs no wait for a device
        self.outcomes = OutcomeRecorder() if stage == "test" else None  # what RunContext.record fills
        with self.strategy.evaluation(model):  # processes may hold different numbers of batches
            for batch in loader.epoch(0):
                batch = self.strategy.batch_to_device(batch)
                with self.autocast():
                    loss = step(batch, metrics)
                if self.outcomes is not None:
                    self.outcomes.add_batch(batch, task.batch_size_of(batch))
                if loss is not None:
                    n = task.batch_size_of(batch)
                    if on_cpu:
                        loss_sum += float(loss) * n
                    else:  # summed on the device, read once after the pass
                        loss_sum = loss_sum + loss.detach().float() * n
                    count += n
        model.train()
        if self.outcomes is not None:  # gathered by every process (a collective), written by the first
            self.last_outcomes = self.outcomes.collect(self.strategy)
            self.outcomes = None
        # every process adds its share, even one whose share held no batch: a collective left out would hang
        sums, count = self.strategy.reduce_sums({"loss": float(loss_sum)}, count)
        loss_sum = sums["loss"]
        out = flatten_metrics(stage, {k: m.compute() for k, m in metrics.items()} if metrics else {},
                              list(task.class_names() or []))
        if count:
            out[f"{stage}/loss"] = float(loss_sum) / count
        self.last_metrics_objects = metrics
        return out

    def _check_monitor(self) -> None:
        """A validation metric the task does not make is refused before the first epoch, not after it."""
        monitor = self.config.monitor
        if not monitor.startswith("val/"):
            return  # train/* figures are the task's own (a GAN logs several): known only once trained
        if self.val_loader is None:
            raise UsageError(f"monitor {monitor!r} needs a validation split and task {self.task.name!r} has none "
                             "here; set monitor=train/loss")
        made = self.make_metrics("val")
        if "val" not in self._metrics:  # made afresh for each pass: the first pass takes these
            self._unused["val"] = made
        names = {name.split("/")[0] for name in made} | {"loss"}
        if monitor.removeprefix("val/").split("/")[0] not in names:
            known = ", ".join(f"val/{n}" for n in sorted(names))
            raise UsageError(f"monitor {monitor!r} is not among this task's validation metrics: {known}")

    def make_metrics(self, stage: str) -> dict[str, Any]:
        """The task's metrics for ``stage``, empty: made on the first pass, reset on later ones
        (building torchmetrics objects costs more than a small validation pass)."""
        cached = self._metrics.get(stage)
        if cached is not None:
            for metric in cached.values():
                metric.reset()
            return cached
        unused = self._unused.pop(stage, None)
        if unused is not None:
            return unused
        configured = self.task.configure_metrics(stage) or {}
        metrics = {k: m.to(self.device) for k, m in dict(configured).items()}
        if all(callable(getattr(m, "reset", None)) for m in metrics.values()):
            self._metrics[stage] = metrics
        return metrics

    # -- the end of a run ----------------------------------------------------------
    def _finish(self) -> dict[str, float]:
        """Test the best weights (by ``monitor``), save them as safetensors, write metrics and pictures."""
        from safetensors.torch import save_file, save_model

        assert self.model is not None and self.module is not None
        self.checkpoint_writer.wait()
        self.strategy.barrier()  # the first process's best.ckpt is on disk for every process
        best = self.run_dir.best_ckpt
        row = self.history[-1] if self.history else {}
        if best.exists():
            checkpoint = load_checkpoint(best, self.task.name)
            self.strategy.load_model_state(self.module, checkpoint["model"])
            # the train and val figures of the epoch whose weights are tested, not of the last epoch
            row = next((r for r in self.history if r.get("epoch") == checkpoint.get("epoch")), row)
        final: dict[str, Any] = {k: v for k, v in row.items() if "/" in k}
        if "epoch" in row:
            final["best_epoch"] = int(row["epoch"])
        self.last_metrics_objects = {}
        if self.test_loader is not None:
            final.update(self._evaluate("test", self.test_loader))
        self.model.eval()
        with torch.no_grad(), self.strategy.evaluation(self.model):
            final.update(self.task.final_metrics(final) or {})
        whole = self.strategy.model_state(self.module) if self.strategy.collective_state else None
        with torch.no_grad(), self.strategy.evaluation(self.model):  # pictures drawn by the first process
            if self.strategy.is_writer:
                tmp = unique_temporary(self.run_dir.weights)
                try:
                    if whole is None:
                        save_model(self.module, str(tmp))
                    else:  # gathered from every process
                        save_file({k: v.contiguous() for k, v in whole.items()}, str(tmp))
                    tmp.replace(self.run_dir.weights)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                self.run_dir.write_final(final)
                self._write_outcomes()
                self.task.write_artifacts(self.run_dir.path, self.last_metrics_objects)
        return final

    def evaluate(self, weights: Path, stage: str = "test") -> dict[str, float]:
        """Evaluate saved weights on ``stage`` without training (``dlguide eval``), with the
        task's ``final_metrics`` beside the figures as in ``metrics.json``."""
        self._setup(with_train=False)
        assert self.module is not None
        load_weights(self.module, weights)
        loader = self.test_loader if stage == "test" else self.val_loader
        if loader is None:
            raise UsageError(f"task {self.task.name!r} has no {stage} split to evaluate")
        metrics = self._evaluate(stage, loader)
        if stage == "test" and self.strategy.is_writer:
            self._write_outcomes()
        self.model.eval()
        with torch.no_grad():  # what a finished run adds once (a protocol, sample quality), as in metrics.json
            metrics.update(self.task.final_metrics(metrics) or {})
        return metrics

    def _write_outcomes(self) -> None:
        """The test pass's per-sample outcomes (``outcomes.safetensors``), for ``dlguide compare``."""
        if self.last_outcomes and len(self.last_outcomes) > 1:  # more than the samples' digests
            write_outcomes(self.run_dir.path / OUTCOMES_FILE, self.last_outcomes, self.task.name)


def scalar(value: Any) -> float:
    """A logged value as a python float: a one-element tensor's value, a larger one's mean."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else float(value.detach().float().mean())
    return float(value)


class CheckpointMismatch(Exception):
    """A checkpoint's contents do not match the task's model or optimizers."""


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model`` or raise a clear CheckpointError."""
    from safetensors.torch import load_model

    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    try:
        load_model(model, str(path), device=str(model_device(model)))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} cannot be loaded into this task's model: {first[:200]}") from None

