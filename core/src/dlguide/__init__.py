"""dlguide: a deep-learning application suite with a small core and domain plugins.

This module is the public API: every name in ``__all__`` is documented and kept stable;
modules whose names start with ``_`` are internal. A plugin imports from ``dlguide`` only
(``from dlguide import Task, TrainConfig, option``), plus ``dlguide.testing`` in its tests
and ``dlguide.hookspecs`` for the hook reference.

Names are imported on first use: ``import dlguide`` (and a plugin's ``plugin`` module)
stays free of torch, so ``dlguide list`` and ``dlguide --help`` start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dlguide.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> the internal module that defines it
_EXPORTS: dict[str, str] = {
    # writing a plugin: registration and hooks
    "Registry": "_registry",
    # writing a task: config, data, model, steps, inference
    "Task": "_task",
    "TrainConfig": "_task",
    "DataSplits": "_task",
    "OPTIMIZERS": "_task",
    "SCHEDULERS": "_task",
    "option": "_config",
    "check_fractions": "_config",
    "check_held_out": "_config",
    "RunContext": "_context",
    "RawInput": "_inference",
    "predict": "_inference",
    "to_json": "_inference",
    # errors a person reads as one line
    "DlguideError": "_errors",
    "UsageError": "_errors",
    "CheckpointError": "_errors",
    "RunError": "_errors",
    "RunInterrupted": "_errors",
    "first_line": "_errors",
    "did_you_mean": "_errors",
    # helpers every domain needs
    "stratified_split": "_splits",
    "kfold": "_splits",
    "cv_fold": "_splits",
    "cv_seed": "_splits",
    "model_device": "_data",
    "package_file": "_resources",
    "package_dir": "_resources",
    "build_optimizer": "_optim",
    "classification_metrics": "_classification",
    "CLASSIFICATION_METRIC_MODES": "_classification",
    "write_confusion_matrix": "_classification",
    "record_classification": "_classification",
    "encode_classes": "_classification",
    "figure": "_plots",
    # running and using runs
    "Trainer": "_trainer",
    "Strategy": "_strategy",
    "gather_rows": "_strategy",
    "SingleDeviceStrategy": "_strategy",
    "RunResult": "_runs",
    "run_task": "_runs",
    "resume_run": "_runs",
    "load_run": "_runs",
    "evaluate_run": "_runs",
    "predict_run": "_runs",
}

__all__ = ["__version__", "hookimpl", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlguide' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dlguide.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and editors; at run time names load lazily
    from dlguide._classification import (CLASSIFICATION_METRIC_MODES, classification_metrics, encode_classes,
                                         record_classification, write_confusion_matrix)
    from dlguide._config import check_fractions, check_held_out, option
    from dlguide._context import RunContext
    from dlguide._data import model_device
    from dlguide._errors import (CheckpointError, DlguideError, RunError, RunInterrupted, UsageError, did_you_mean,
                                 first_line)
    from dlguide._inference import RawInput, predict, to_json
    from dlguide._optim import build_optimizer
    from dlguide._plots import figure
    from dlguide._registry import Registry
    from dlguide._resources import package_dir, package_file
    from dlguide._runs import RunResult, evaluate_run, load_run, predict_run, resume_run, run_task
    from dlguide._splits import cv_fold, cv_seed, kfold, stratified_split
    from dlguide._strategy import SingleDeviceStrategy, Strategy, gather_rows
    from dlguide._task import OPTIMIZERS, SCHEDULERS, DataSplits, Task, TrainConfig
    from dlguide._trainer import Trainer
