"""A plugin module loaded by every worker of a benchmarked run (``DLGUIDE_PLUGINS=_process_clock``):
each process counts the seconds of its training batches and the samples it took in them, and
writes them to ``$DLGUIDE_BENCH_DIR/rank<R>.json`` when the run ends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from _common import TrainingClock

from dlguide import hookimpl

_clock = TrainingClock()
dlguide_epoch_start = _clock.dlguide_epoch_start
dlguide_train_batch_end = _clock.dlguide_train_batch_end


@hookimpl
def dlguide_run_end(trainer: Any, metrics: dict[str, Any]) -> None:
    folder = Path(os.environ["DLGUIDE_BENCH_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    rank = trainer.strategy.rank
    (folder / f"rank{rank}.json").write_text(json.dumps({"seconds": _clock.seconds, "samples": _clock.samples}))
