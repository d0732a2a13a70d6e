"""The run directory: everything a run writes, readable without dlguide.

    config.yaml          resolved config, with the task name
    task.json            facts the task learnt from its data (classes, vocabulary size)
    metrics.jsonl        one JSON object per epoch
    metrics.json         final metrics, flat, keyed "<split>/<metric>"
    checkpoints/         last.ckpt, best.ckpt (torch, weights_only-loadable)
    model.safetensors    the weights evaluated on the test split
    learning_curves.png  loss and metrics per epoch
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from dlguide._config import dump_yaml
from dlguide._errors import UsageError


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def new(cls, task: str, out: str | Path | None) -> RunDir:
        """A fresh run directory; refuses one that already holds a run (nothing is overwritten)."""
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            out = Path("runs") / task / stamp
        run = cls(out)
        if run.config_path.exists() or run.checkpoints.exists():
            raise UsageError(f"{run.path} already holds a run; continue it with 'dlguide resume {run.path}' "
                             "or choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def clear_unstarted(self) -> None:
        """Remove what a run that never wrote a checkpoint left (its config, epoch log, logs), so
        that it can start again in the same directory; a run with a checkpoint is left alone."""
        import shutil

        if self.last_ckpt.exists() or self.best_ckpt.exists():
            return
        for name in ("config.yaml", "task.json", "metrics.jsonl", "learning_curves.png"):
            (self.path / name).unlink(missing_ok=True)
        for name in ("tensorboard", "checkpoints"):
            shutil.rmtree(self.path / name, ignore_errors=True)

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.config_path.is_file():
            raise UsageError(f"{run.path} is not a dlguide run directory (no config.yaml)")
        return run

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def meta_path(self) -> Path:
        return self.path / "task.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def epoch_metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final_metrics(self) -> Path:
        return self.path / "metrics.json"

    # config and task facts
    def write_config(self, task: str, config: Mapping[str, Any]) -> None:
        write_text_atomic(self.config_path, dump_yaml({"task": task, **config}))

    def read_config(self) -> tuple[str, dict[str, Any]]:
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read {self.config_path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            raise UsageError(f"{self.config_path} does not name a task")
        task = data.pop("task")
        return task, data

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_text_atomic(self.meta_path, json.dumps(dict(meta), indent=2))

    def read_meta(self) -> dict[str, Any]:
        if not self.meta_path.is_file():
            return {}
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    # metrics
    def open_epoch_log(self) -> EpochLog:
        """``metrics.jsonl`` held open for a run: one write per epoch instead of an open and a close."""
        return EpochLog(self.epoch_metrics.open("a", encoding="utf-8"))

    def read_epochs(self) -> list[dict[str, Any]]:
        if not self.epoch_metrics.is_file():
            return []
        return [json.loads(line) for line in self.epoch_metrics.read_text(encoding="utf-8").splitlines() if line]

    def truncate_epochs(self, keep: int) -> None:
        """Keep the rows of the first ``keep`` epochs (a resumed run rewrites what follows)."""
        rows = [r for r in self.read_epochs() if int(r.get("epoch", 0)) <= keep]
        write_text_atomic(self.epoch_metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def write_final(self, metrics: Mapping[str, Any], name: str = "metrics.json") -> Path:
        path = self.path / name
        write_text_atomic(path, json.dumps({k: _json_safe(v) for k, v in metrics.items()}, indent=2) + "\n")
        return path


class EpochLog:
    """Appends epoch rows to an open ``metrics.jsonl``; each row is on disk once ``append`` returns."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def append(self, row: Mapping[str, Any]) -> None:
        self.fh.write(json.dumps({k: _json_safe(v) for k, v in row.items()}) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
