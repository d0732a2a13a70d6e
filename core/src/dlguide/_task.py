"""The Task: the unit a user runs (``vision.classify``), and the config keys every task shares.

A Task builds its data and model from a typed config and defines its steps; the Trainer
owns everything else. This module imports no torch at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

from dlguide._config import option
from dlguide._errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from torchmetrics import Metric

    from dlguide._trainer import Trainer

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")


@dataclasses.dataclass
class TrainConfig:
    """Keys every task accepts. A task's own config subclasses this and adds its keys."""

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
    monitor_mode: str = option("auto", "min or max; auto means min for losses and errors, max otherwise",
                               choices=("auto", "min", "max"))
    limit_train_batches: int = option(0, "use at most this many training batches per epoch (0: all)")
    limit_eval_batches: int = option(0, "use at most this many validation/test batches (0: all)")
    fast_dev_run: bool = option(False, "one epoch of one batch per split, to check a task end to end")

    def validate(self) -> None:
        """Raise UsageError for values no run can use."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "accumulate_grad_batches": self.accumulate_grad_batches}
        for key, value in positive.items():
            if value < 1:
                raise UsageError(f"invalid value for {key!r}: {value}; expected an integer >= 1")
        for key in ("lr",):
            if not getattr(self, key) > 0:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected a number > 0")
        for key in ("weight_decay", "gradient_clip_norm", "warmup_steps", "num_workers", "lr_step_epochs",
                    "early_stopping_patience", "limit_train_batches", "limit_eval_batches", "checkpoint_interval"):
            if getattr(self, key) < 0:
                raise UsageError(f"invalid value for {key!r}: {getattr(self, key)}; expected a value >= 0")
        if self.data_dir is not None and not self.data_dir.exists():
            raise UsageError(f"data_dir not found: {self.data_dir}")

    @property
    def resolved_monitor_mode(self) -> Literal["min", "max"]:
        if self.monitor_mode != "auto":
            return self.monitor_mode  # type: ignore[return-value]
        leaf = self.monitor.rsplit("/", 1)[-1].lower()
        return "min" if any(w in leaf for w in ("loss", "error", "distance", "hd95", "mse", "mae")) else "max"


@dataclasses.dataclass
class DataSplits:
    """The datasets of a run; ``val`` and ``test`` are optional."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None


class Task:
    """Base of every task. Subclasses set ``Config`` and implement the data, model and steps.

    ``meta`` holds JSON-safe facts learnt from the data (class names, vocabulary size) that
    ``build_model`` and ``predict`` need; it is saved in the run directory as ``task.json``
    so a finished run can be evaluated and used without rebuilding its data.
    """

    Config: ClassVar[type[TrainConfig]] = TrainConfig
    #: False when ``training_step`` drives its own optimizers (a GAN does).
    automatic_optimization: ClassVar[bool] = True

    def __init__(self, config: TrainConfig, name: str = "") -> None:
        self.config = config
        self.name = name or type(self).__name__
        self.meta: dict[str, Any] = {}
        self.model: nn.Module | None = None
        self.trainer: Trainer | None = None
        #: the run directory a finished run was loaded from (set by ``dlguide._runs.load_run``)
        self.run_dir: Path | None = None

    # -- data and model -------------------------------------------------------------
    def build_data(self) -> DataSplits:
        """Build train/val/test datasets from the config; may fill ``self.meta``."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """Build the model from the config and ``self.meta``."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """Return optimizers to use instead of the config's (None: the Trainer builds one)."""
        return None

    def configure_metrics(self, stage: str) -> Mapping[str, Metric] | None:
        """torchmetrics metrics for ``stage`` (``val`` or ``test``), reduced per epoch.

        Called once per stage and run; the Trainer resets the metrics before every pass (a
        metric without ``reset`` is asked for afresh instead). Per-pass state of the task's
        own belongs in ``on_evaluation_start``.
        """
        return None

    def on_evaluation_start(self, stage: str) -> None:
        """Called before every validation (``val``) or test (``test``) pass, after the metrics are reset."""

    # -- steps ----------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """Return the loss (or a dict with ``loss`` and other scalars to average per epoch)."""
        raise NotImplementedError

    def validation_step(self, batch: Any, metrics: Mapping[str, Metric]) -> torch.Tensor | None:
        """Update ``metrics`` with this batch and return its loss (or None)."""
        raise NotImplementedError

    def test_step(self, batch: Any, metrics: Mapping[str, Metric]) -> torch.Tensor | None:
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
        """Write pictures and files a person reads (confusion matrix, sample grids)."""
        return []

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        """Predict for inputs given on the command line (paths or texts).

        A task whose predictions are files adds a keyword ``out_dir: Path`` (``predict --out``).
        """
        raise UsageError(f"task {self.name!r} does not support predict")

    def format_prediction(self, row: Mapping[str, Any]) -> str:
        """One printed line for one prediction."""
        return "  ".join(f"{k}={v}" for k, v in row.items())
