"""The Task: the unit a user runs (``vision.classify``), and the config keys every task shares.

A Task builds its data and model from a typed config and defines its steps; the Trainer
owns everything else. This module imports no torch at import time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from dlguide._config import option
from dlguide._errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from torchmetrics import Metric

    from dlguide._context import RunContext
    from dlguide._inference import RawInput
    from dlguide._plugins import Runtime

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")


@dataclasses.dataclass
class TrainConfig:
    """Keys every task accepts. A task's own config subclasses this (a ``dataclasses.dataclass``)
    and adds its keys as ``option(default, help)`` fields, or gives inherited keys other defaults
    by declaring them again."""

    resume_keys: ClassVar[frozenset[str]] = frozenset({
        "epochs", "early_stopping_patience", "checkpoint_interval", "async_checkpoints", "num_workers", "device",
        "lr", "strategy"})
    """Keys that ``dlguide resume --set`` may change; any other changed key is refused."""

    epochs: int = option(10, "number of passes over the training data")
    batch_size: int = option(64, "samples per batch")
    lr: float = option(1e-3, "learning rate (the peak rate for onecycle)")
    optimizer: str = option("adam", "optimizer: sgd, momentum (SGD, momentum 0.9), nesterov, adam, adamw, rmsprop",
                            choices=OPTIMIZERS)
    momentum: float = option(0.9, "momentum of the momentum and nesterov optimizers")
    weight_decay: float = option(0.0, "L2 penalty (decoupled for adamw)")
    scheduler: str = option("none", "learning-rate schedule, stepped per optimizer step (plateau: per epoch)",
                            choices=SCHEDULERS)
    warmup_steps: int = option(0, "linear learning-rate warmup over this many optimizer steps")
    lr_step_epochs: int = option(0, "epochs between decays of the step schedule (0: a third of the run)")
    lr_gamma: float = option(0.1, "decay factor of the step and plateau schedules")
    lr_patience: int = option(2, "epochs without improvement before plateau decays the rate")
    seed: int = option(42, "seed of python, numpy, torch and the data order")
    deterministic: bool = option(False, "use deterministic algorithms only (slower; exact on GPU too)")
    device: str = option("auto", "auto (cuda, then mps, then cpu), cpu, cuda or mps",
                         choices=("auto", "cpu", "cuda", "mps"))
    strategy: str = option("auto", "auto (ddp when torchrun started several processes, else single), single, "
                           "ddp, or fsdp (FSDP2's fully_shard, CUDA)", choices=("auto", "single", "ddp", "fsdp"))
    sync_batchnorm: bool = option(False, "with several CUDA processes: batch-norm statistics over the whole "
                                  "global batch")
    precision: str = option("32", "32, bf16 (autocast) or 16-mixed (autocast + grad scaler on cuda)",
                            choices=("32", "bf16", "16-mixed"))
    accumulate_grad_batches: int = option(1, "batches whose gradients add up before one optimizer step")
    gradient_clip_norm: float = option(0.0, "clip the global gradient norm to this value (0: off)")
    dataset: str = option("", "dataset name (each task lists its own)")
    data_dir: Optional[Path] = option(None, "folder holding the dataset files")
    num_workers: int = option(0, "data-loading worker processes")
    checkpoint_interval: float = option(60.0, "seconds between last.ckpt writes at epoch ends (0: every epoch); "
                                        "the end of training and SIGINT/SIGTERM always write one")
    async_checkpoints: bool = option(True, "write the epoch-end checkpoints on a background thread while the "
                                     "next epoch trains")
    early_stopping_patience: int = option(0, "stop after this many epochs without improvement (0: off)")
    monitor: str = option("val/loss", "metric that picks the best checkpoint and drives early stopping")
    monitor_mode: str = option("auto", "min or max; auto: min for losses, otherwise what the task declares "
                               "for the metric", choices=("auto", "min", "max"))
    limit_train_batches: int = option(0, "use at most this many training batches per epoch (0: all)")
    limit_eval_batches: int = option(0, "use at most this many validation/test batches (0: all)")
    fast_dev_run: bool = option(False, "one epoch of one batch per split, to check a task end to end")
    cv_folds: int = option(0, "set by dlguide cv: train and validation pooled and cut into this many folds "
                           "(0: the task's own split)")
    cv_fold: int = option(0, "set by dlguide cv: the fold held out for validation")
    cv_repeat: int = option(0, "set by dlguide cv: the repeat, whose folds are drawn with seed + cv_repeat")

    def validate(self) -> None:
        """Raise ``UsageError`` for values no run can use. Called once the config is resolved, before
        anything runs (not for a finished run's saved config); a subclass that checks its own keys
        calls ``super().validate()`` first."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "accumulate_grad_batches": self.accumulate_grad_batches}
        for key, value in positive.items():
            if value < 1:
                raise UsageError(f"invalid value for {key!r}: {value}; expected an integer >= 1")
        if self.cv_folds == 1 or self.cv_folds < 0 or (self.cv_folds and not 0 <= self.cv_fold < self.cv_folds) \
                or self.cv_repeat < 0:
            raise UsageError(f"invalid cv_folds={self.cv_folds}, cv_fold={self.cv_fold}, cv_repeat={self.cv_repeat}; "
                             "expected cv_folds 0 or >= 2, 0 <= cv_fold < cv_folds and cv_repeat >= 0")
        for key in ("lr",):
            if not 0 < getattr(self, key) < math.inf:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected a finite number > 0")
        for key in ("weight_decay", "gradient_clip_norm", "warmup_steps", "num_workers", "lr_step_epochs",
                    "early_stopping_patience", "limit_train_batches", "limit_eval_batches", "checkpoint_interval"):
            if getattr(self, key) < 0:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected a value >= 0")
        if self.data_dir is not None and not self.data_dir.exists():
            raise UsageError(f"data_dir not found: {self.data_dir}")


@dataclasses.dataclass
class DataSplits:
    """The datasets of a run; ``val`` and ``test`` are optional."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None


class Task:
    """Base of every task. Subclasses set ``Config`` and implement the data, model and steps.

    What a task may implement, with the signatures the core calls (only ``build_data``,
    ``build_model``, ``training_step`` and ``validation_step`` are required):

    - data and model: ``build_data() -> DataSplits``, ``build_model() -> nn.Module``,
      ``configure_optimizers()``, ``configure_metrics(stage)``, ``collate(samples)``;
    - steps: ``training_step(batch, batch_idx)``; ``validation_step(batch, metrics)`` and
      ``test_step(batch, metrics)``, which take no ``batch_idx``; ``on_evaluation_start(stage)``;
    - lifecycle: ``on_fit_start()``, ``on_epoch_end(epoch, metrics)``;
    - after training: ``final_metrics(metrics)``, ``write_artifacts(run_dir, metrics)``;
    - inference: ``decode(raw)`` -> ``predict_step(batch)`` -> ``encode(output, sample, raw, *, out_dir=None)``,
      ``format_prediction(row)`` for the command line, ``output_name(raw)`` for tasks that write files;
    - export and monitoring: ``reference_inputs(data, count)``, ``inference_files()``,
      ``describe_input(sample)``, ``describe_output(output)``.

    ``self.model`` is the model as the run's Strategy wrapped it: call networks through it
    (``self.model(x)``), never around it, so a distributed wrapper sees every forward pass;
    ``self.module`` is the bare module, for its own methods and attributes.

    ``self.meta`` holds JSON-safe facts learnt from the data (class names, vocabulary size,
    normalisation) that ``build_model`` and inference need; it is saved in the run directory
    as ``task.json``. A finished run is loaded for ``eval``, ``predict``, ``export`` and ``serve``
    from its config and ``task.json`` without calling ``build_data``, so anything ``build_model``,
    ``decode`` or ``encode`` needs must be in ``self.meta``, not in other attributes set there.
    Files that inference needs (a tokenizer, id maps) go into ``self.run_dir`` when the data are
    built, and are named by ``inference_files``.

    ``self.run`` is the context of the run in progress (a ``RunContext``; None for a finished run
    loaded for inference): the run directory, epoch and step, ``stop(reason)``, whether this
    process writes, ``record`` for per-sample test outcomes, and for tasks that step their
    optimizers themselves, ``backward`` and ``optimizer_step``. ``self.config`` is the resolved
    config (an instance of ``Config``) and ``self.name`` the registered name (``vision.classify``).
    """

    Config: ClassVar[type[TrainConfig]] = TrainConfig
    """The task's config class: a dataclass subclassing ``TrainConfig`` (``dlguide info`` lists its keys)."""
    automatic_optimization: ClassVar[bool] = True
    """False when ``training_step`` drives its own optimizers (a GAN does), with ``self.run.backward``
    and ``self.run.optimizer_step``."""
    metric_modes: ClassVar[Mapping[str, str]] = {}
    """Whether higher or lower is better, by metric name (``{"accuracy": "max", "hd95": "min"}``):
    ``monitor_mode=auto`` reads it for the monitored metric; a metric named ``*loss`` is minimised."""
    input_kind: ClassVar[str] = "text"
    """What ``decode`` takes: ``file`` (bytes with a name, or a local path), ``text`` or ``json`` (a value).
    ``dlguide predict`` reads its command-line inputs accordingly (a ``json`` word that is not JSON stays
    a string)."""
    writes_files: ClassVar[bool] = False
    """True when ``encode`` writes files (label volumes, images) into its ``out_dir``; such a task
    names them in ``output_name``."""
    predict_batch_size: ClassVar[int | None] = None
    """Most decoded samples per ``predict_step`` batch (None: the config's ``batch_size``)."""
    export_module: ClassVar[str] = "model"
    """The network ``predict_step`` calls with positional tensors, as a dotted attribute of the
    task (``model``, or ``model.generator`` for a GAN's generator): what ``dlguide export``
    writes as ONNX and ``torch.export`` programs, and what an exported runtime stands in for."""
    export_input_names: ClassVar[tuple[str, ...]] = ()
    """Names of that network's inputs in exported files (default ``input_0``, ``input_1``...)."""
    export_output_names: ClassVar[tuple[str, ...]] = ()
    """Names of its outputs in exported files (default ``output_0``, ``output_1``...)."""
    supports_folds: ClassVar[bool] = False
    """True when ``build_data`` honours ``cv_folds``/``cv_fold`` (``dlguide.cv_fold``): ``dlguide cv`` runs it."""
    reference_from_data: ClassVar[bool] = True
    """False when ``reference_inputs`` makes its inputs without the data (a generator's seeds):
    export then passes ``data=None`` instead of building the data set."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from dlguide._inference import INPUT_KINDS

        if cls.input_kind not in INPUT_KINDS:
            raise TypeError(f"{cls.__qualname__}.input_kind is {cls.input_kind!r}; expected one of "
                            f"{', '.join(INPUT_KINDS)}")
        config = cls.__dict__.get("Config")
        if config is not None and not (isinstance(config, type) and issubclass(config, TrainConfig)
                                       and dataclasses.is_dataclass(config)):
            raise TypeError(f"{cls.__qualname__}.Config must be a dataclass subclassing dlguide.TrainConfig, "
                            f"not {config!r}")

    def __init__(self, config: TrainConfig, name: str = "") -> None:
        self.config = config
        self.name = name or type(self).__name__
        self.meta: dict[str, Any] = {}
        self.model: nn.Module | None = None
        self.module: nn.Module | None = None
        self.run: RunContext | None = None
        #: the run directory: of the run in progress, or of a finished run loaded for inference
        self.run_dir: Path | None = None
        self._runtime: Runtime | None = None  # set by dlguide's build_task: whose registry to read

    # -- the registry ---------------------------------------------------------------
    @property
    def domain(self) -> str:
        """The part of the task name before the dot (``vision`` for ``vision.classify``)."""
        return self.name.split(".", 1)[0]

    def registered(self, kind: str, name: str) -> Any:
        """The model builder or dataset loader registered as ``<domain>.<name>`` (imported now).

        A model builder is called as ``builder(config, meta) -> nn.Module``; what ``meta`` holds
        is the task's to document (classes, channels, image size, vocabulary size).
        """
        from dlguide._plugins import get_runtime

        runtime = self._runtime or get_runtime()
        return runtime.registry.load(kind, f"{self.domain}.{name}")  # type: ignore[arg-type]

    def build_registered_model(self, name: str) -> nn.Module:
        """``registered("model", name)(self.config, self.meta)``, checked to be an ``nn.Module``."""
        from torch import nn

        model = self.registered("model", name)(self.config, self.meta)
        if not isinstance(model, nn.Module):
            raise UsageError(f"model {self.domain}.{name} built a {type(model).__name__}, not a torch nn.Module")
        return model

    def monitor_mode(self) -> str:
        """``min`` or ``max`` for the monitored metric: the config's, else the task's declaration."""
        cfg = self.config
        if cfg.monitor_mode != "auto":
            return cfg.monitor_mode
        leaf = cfg.monitor.split("/")[1] if cfg.monitor.count("/") >= 1 else cfg.monitor
        base = leaf.split("@", 1)[0]
        for key in (leaf, base):
            if key in self.metric_modes:
                return self.metric_modes[key]
        if base.endswith("loss"):
            return "min"
        raise UsageError(f"monitor {cfg.monitor!r}: task {self.name!r} does not say whether {base!r} is better "
                         "high or low; set monitor_mode=min or monitor_mode=max")

    # -- data and model -------------------------------------------------------------
    def build_data(self) -> DataSplits:
        """Build the train/val/test datasets as a ``DataSplits``; fill ``self.meta``.

        Called when a run starts or resumes and by ``dlguide eval``, never when a finished run is
        loaded for prediction: put what ``build_model`` and inference need into ``self.meta``
        (JSON-safe), and files they read into ``self.run_dir``. Raise ``UsageError`` for data
        that cannot be used (a missing file, a bad column), before anything is trained.
        """
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """Build the (bare) model from the config and ``self.meta`` (or
        ``self.build_registered_model(self.config.model)``). Called after ``build_data`` in a run,
        and alone, with ``self.meta`` read from ``task.json``, when a finished run is loaded."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """Return an optimizer, or a list of them, to use instead of the config's (None: the
        Trainer builds one over the model's parameters from ``optimizer``, ``lr`` and
        ``weight_decay``). Each gets the config's learning-rate schedule."""
        return None

    def configure_metrics(self, stage: str) -> Mapping[str, Metric] | None:
        """torchmetrics metrics for ``stage`` (``val`` or ``test``), reduced per epoch.

        Called once per stage and run; the Trainer resets the metrics before every pass (a
        metric without ``reset`` is asked for afresh instead). Per-pass state of the task's
        own belongs in ``on_evaluation_start``.
        """
        return None

    def collate(self, samples: list[Any]) -> Any:
        """Samples -> one batch, for the data loaders and for inference (torch's ``default_collate``).
        At inference the samples are what ``decode`` returned."""
        from torch.utils.data import default_collate

        return default_collate(samples)

    def on_evaluation_start(self, stage: str) -> None:
        """Called before every validation (``val``) or test (``test``) pass, after the metrics are reset."""

    # -- lifecycle ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Called once the run is set up (checkpoint restored), before the first epoch it trains."""

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after each epoch's validation with its flat metrics (before the plugins hear of it)."""

    # -- steps ----------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """One training batch (already on the device) -> the loss, or a dict with ``loss`` and other
        scalars to average per epoch (logged as ``train/<name>``). ``batch_idx`` counts the
        epoch's batches from 0. The Trainer backpropagates and steps, with accumulation and
        clipping; with ``automatic_optimization = False`` the step does that itself through
        ``self.run.backward(loss)`` and ``self.run.optimizer_step(optimizer)`` and returns
        detached figures."""
        raise NotImplementedError

    def validation_step(self, batch: Any, metrics: Mapping[str, Metric]) -> torch.Tensor | None:
        """One validation batch -> its loss (or None); update ``metrics`` with it.

        There is no ``batch_idx``. ``metrics`` is the dict ``configure_metrics("val")`` returned
        (empty when it returned None), reset before each pass and computed after it as
        ``val/<name>``. Runs with the model in eval mode, without gradients."""
        raise NotImplementedError

    def test_step(self, batch: Any, metrics: Mapping[str, Metric]) -> torch.Tensor | None:
        """One test batch -> its loss (or None), like ``validation_step`` (the default calls it)
        with the metrics of ``configure_metrics("test")``. Record per-sample outcomes here with
        ``self.run.record(...)`` for ``dlguide compare``."""
        return self.validation_step(batch, metrics)

    def batch_size_of(self, batch: Any) -> int:
        """Samples in a batch (the first tensor's length by default)."""
        import torch

        stack = [batch]
        while stack:
            item = stack.pop(0)
            if isinstance(item, torch.Tensor):
                return int(item.shape[0]) if item.dim() else 1
            if isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        return 1

    def class_names(self) -> Sequence[str] | None:
        """Names used to label per-class metric vectors (``test/recall/<name>``)."""
        names = self.meta.get("classes")
        return list(names) if names else None

    # -- after training -------------------------------------------------------------
    def final_metrics(self, metrics: Mapping[str, float]) -> Mapping[str, Any]:
        """Figures measured once on the final (best) model after the test pass, merged into
        ``metrics.json``: sample quality of a generator, the evaluation protocol as strings."""
        return {}

    def write_artifacts(self, run_dir: Path, metrics: Mapping[str, Metric]) -> list[Path]:
        """Write pictures and files a person reads (confusion matrix, sample grids) into
        ``run_dir``, by the first process only; ``metrics`` are the test pass's metric objects.
        Return the paths written."""
        return []

    # -- inference: decode -> predict_step -> encode ----------------------------------
    def decode(self, raw: RawInput) -> Any:
        """One raw input (file bytes with a name, a text, a JSON value, as ``input_kind`` says)
        -> one sample for ``collate`` and ``predict_step`` (a tensor, or a tuple or dict of them).

        Raise ``dlguide.UsageError`` naming the input (``raw.label``) for bad input: the command
        line prints it as one line with exit code 2, the server answers 4xx. Read what training
        learnt from ``self.meta``: no data are built for prediction."""
        raise UsageError(f"task {self.name!r} does not support predict")

    def output_name(self, raw: RawInput) -> str:
        """The file name ``encode`` writes for ``raw`` (tasks with ``writes_files``): the core refuses
        one call whose inputs would write the same file, before any input is decoded."""
        raise NotImplementedError(f"task {self.name!r} writes files: it must name them in output_name")

    def predict_step(self, batch: Any) -> Any:
        """A batch of decoded samples (collated) -> outputs with the batch dimension first."""
        assert self.model is not None
        return self.model(batch)

    def encode(self, output: Any, sample: Any, raw: RawInput, *, out_dir: Path | None = None) -> dict[str, Any]:
        """One sample's output (on the CPU) -> a JSON-safe result: one of the rows that
        ``dlguide.predict`` and ``predict_run`` return and the server answers. A task with
        ``writes_files`` writes its files into ``out_dir`` here and names them under ``"file"``.
        Without an ``"input"`` key the core puts one first (``RawInput.echo``)."""
        from dlguide._inference import to_json

        return {"output": to_json(output)}

    def reference_inputs(self, data: DataSplits | None, count: int) -> list[RawInput]:
        """Up to ``count`` raw inputs made from ``data.test`` as a client would send them (image
        files' bytes, texts, user ids), spread over the split: ``dlguide export`` keeps a few
        with their outputs for ``export verify``, traces the exported network on them, and
        predicts all of them for the drift monitor's reference. A task without it exports its
        weights only."""
        raise NotImplementedError(f"task {self.name!r} gives no reference inputs")

    def inference_files(self) -> Sequence[str]:
        """Paths, relative to the run directory, of the files besides ``config.yaml``,
        ``task.json`` and the weights that loading and predicting read (a tokenizer, an id map):
        ``dlguide export`` copies them into the bundle."""
        return ()

    def describe_input(self, sample: Any) -> float | None:
        """One number that summarises a decoded sample for drift monitoring: by default the
        mean of its first floating-point or image-like (2-D or more) tensor, or else the count
        of non-zero entries (a text's tokens) of its first integer vector; None: not monitored."""
        import torch

        tensors = [t for t in _tensors(sample) if t.numel()]
        for tensor in tensors:
            if tensor.is_floating_point() or tensor.dim() >= 2:
                return float(tensor.float().mean())
        for tensor in tensors:
            if tensor.dim() > 0:
                return float(torch.count_nonzero(tensor))
        return None

    def describe_output(self, output: Any) -> str | float | None:
        """One sample's output for drift monitoring: the predicted class's name when the output
        is a vector of class scores, else the mean of the output (a score); None: not monitored."""
        tensors = [t for t in _tensors(output) if t.numel() and t.is_floating_point()]
        if not tensors:
            return None
        first = tensors[0].float()
        classes = self.class_names()
        if classes and first.dim() == 1 and len(first) == len(classes):
            return str(classes[int(first.argmax())])
        finite = first[first.isfinite()]
        return float(finite.mean()) if finite.numel() else None

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        """One printed line for one prediction: its input, then the rest (a classifier's label,
        probability and runners-up; else each key as ``key=value``)."""
        from dlguide._inference import format_row

        return format_row(row)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a sample or output (a tensor, or nested tuples, lists and dicts), in order."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
