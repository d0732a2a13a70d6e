"""Every hook a dlguide plugin can implement, in one flat file.

Discovery hooks run once when plugins load; run-lifecycle hooks run for every Trainer run.
The built-in checkpointing, early stopping, metric logging and progress bar are themselves
implementations of these hooks (``dlguide._callbacks``), registered for the length of a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from dlguide._registry import Registry
    from dlguide._trainer import Trainer

hookspec = pluggy.HookspecMarker("dlguide")
hookimpl = pluggy.HookimplMarker("dlguide")


@hookspec
def dlguide_register(registry: Registry) -> None:
    """Register the plugin's tasks, models and datasets as lazy ``"module:Attr"`` targets."""


@hookspec
def dlguide_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add CLI subcommands; each sets ``handler=callable(args) -> int`` with ``set_defaults``."""


@hookspec
def dlguide_run_start(trainer: Trainer) -> None:
    """Called once a run is set up (model, optimizers and data built, checkpoint restored)."""


@hookspec
def dlguide_epoch_start(trainer: Trainer, epoch: int) -> None:
    """Called before the first training batch of each epoch."""


@hookspec
def dlguide_train_batch_end(trainer: Trainer, batch_idx: int, loss: Any) -> None:
    """Called after every training batch with its detached loss tensor (read it lazily)."""


@hookspec
def dlguide_epoch_end(trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
    """Called after validation of each epoch with that epoch's flat ``"<split>/<metric>"`` dict."""


@hookspec
def dlguide_save_checkpoint(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Add this plugin's state to a checkpoint dict before it is written."""


@hookspec
def dlguide_load_checkpoint(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Restore this plugin's state from a checkpoint dict when a run resumes."""


@hookspec
def dlguide_checkpoint_saved(trainer: Trainer, path: Path, kind: str) -> None:
    """Called after a checkpoint (``last``, ``best`` or ``interrupt``) is on disk, maybe from the checkpoint thread."""


@hookspec
def dlguide_run_end(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Called once a run has finished with its final flat metrics (test split included)."""


@hookspec
def dlguide_run_exception(trainer: Trainer, exception: BaseException) -> None:
    """Called when a run stops on an exception (NaN loss, interruption, error) before it propagates."""
