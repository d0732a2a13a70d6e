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

import contextlib
import errno
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from dlguide._config import dump_yaml
from dlguide._errors import RunError, UsageError


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def unique_temporary(path: Path) -> Path:
    """A new, empty file beside ``path`` with a unique name, created exclusively (``O_EXCL``): a
    link planted at a predictable name cannot redirect the write. Renamed over ``path`` when
    complete; a crash leaves ``.NAME.XXXX.tmp``, which the next run in the directory removes."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:  # mkstemp makes it private; the finished file gets the mode any new file gets (the umask's)
        os.fchmod(fd, 0o666 & ~_UMASK)
    finally:
        os.close(fd)
    return Path(tmp)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary file and a rename; a symlink at
    ``path`` is replaced, never followed."""
    tmp = unique_temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _no_space(exc: OSError, path: Path) -> OSError | RunError:
    """An error writing ``path`` as one line naming the file (a full disk above all)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunError(f"cannot write {path}: no space left on the device; free some and continue with "
                        f"'dlguide resume {path.parent}'")
    return exc


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None

    @classmethod
    def new(cls, task: str, out: str | Path | None) -> RunDir:
        """A fresh run directory, locked for this process; refuses one that already holds a run
        (nothing is overwritten) or that another process holds."""
        if out is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            out = Path("runs") / task / stamp
        run = cls(out)
        if run.path.exists() and not run.path.is_dir():
            raise UsageError(f"--out {run.path} is a file; expected a directory for the run")
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock()  # before looking: of two processes started together, one gets the directory
        if run.config_path.exists() or run.checkpoints.exists():
            run.unlock()
            if not run.last_ckpt.is_file():
                raise UsageError(f"{run.path} holds a run that never wrote a checkpoint; start it again with "
                                 f"'dlguide resume {run.path}' or choose another --out")
            raise UsageError(f"{run.path} already holds a run; continue it with 'dlguide resume {run.path}' "
                             "or choose another --out")
        return run

    # the lock: one process writes a run directory at a time
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def lock(self) -> RunDir:
        """Hold the directory's lock (an OS file lock: released when the process ends, however it
        ends, so a killed run never leaves a stale lock); UsageError naming the holder's PID when
        another process holds it. ``eval``, ``predict`` and ``export`` read without it."""
        if self._lock is not None:
            return self
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{self.path} is in use by process {holder} (a run or resume of it); wait for that "
                             "process to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the ``.NAME.XXXX.tmp`` files a crashed write left (the caller holds the lock)."""
        stale = [p for folder in (self.path, self.checkpoints) if folder.is_dir()
                 for p in folder.glob(".*.tmp") if p.is_file() or p.is_symlink()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def clear_unstarted(self) -> None:
        """Remove what a run that never wrote a checkpoint left (its epoch log, logs; not its
        config), so that it can start again in the same directory; a run with a checkpoint is left alone."""
        import shutil

        if self.last_ckpt.exists() or self.best_ckpt.exists():
            return
        for name in ("task.json", "metrics.jsonl", "learning_curves.png"):  # the config stays: it is the run
            (self.path / name).unlink(missing_ok=True)
        for name in ("tensorboard", "checkpoints"):
            shutil.rmtree(self.path / name, ignore_errors=True)

    def discard(self) -> None:
        """Remove a run that failed before its first checkpoint (bad data, a wrong setting): what
        it wrote goes, and the directory too when nothing else is in it."""
        if self.last_ckpt.exists():
            return
        self.clear_unstarted()
        self.config_path.unlink(missing_ok=True)
        self.unlock()
        self.lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.rmdir()  # only when empty: a folder the user keeps other files in stays

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.config_path.is_file():
            raise UsageError(f"{run.path} is not a dlguide run directory (no config.yaml)")
        if (run.path / "manifest.json").is_file():
            raise UsageError(f"{run.path} is an export bundle, not a run directory; serve or verify it "
                             "(dlguide serve, dlguide export verify)")
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
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{self.meta_path} is not valid JSON ({str(exc).splitlines()[0][:120]}); expected "
                             "the task facts the run wrote") from None
        if not isinstance(meta, dict):
            raise UsageError(f"{self.meta_path} holds a {type(meta).__name__}; expected a JSON object")
        return meta

    # metrics
    def open_epoch_log(self) -> EpochLog:
        """``metrics.jsonl`` held open for a run: one write per epoch instead of an open and a close."""
        return EpochLog(self.epoch_metrics.open("a", encoding="utf-8"), self.epoch_metrics)

    def read_epochs(self) -> list[dict[str, Any]]:
        """The epoch rows; a last row cut short (a crash or a full disk mid-write) is dropped."""
        if not self.epoch_metrics.is_file():
            return []
        text = self.epoch_metrics.read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        rows: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1 and not text.endswith("\n"):
                    break  # torn: the epoch it was for is trained again
                raise UsageError(f"{self.epoch_metrics} line {i + 1} is not a JSON object; expected one row "
                                 "per epoch") from None
        return rows

    def truncate_epochs(self, keep: int) -> None:
        """Keep the rows of the first ``keep`` epochs (a resumed run rewrites what follows)."""
        rows = [r for r in self.read_epochs() if int(r.get("epoch", 0)) <= keep]
        write_text_atomic(self.epoch_metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def write_final(self, metrics: Mapping[str, Any], name: str = "metrics.json") -> Path:
        path = self.path / name
        try:
            write_text_atomic(path, json.dumps({k: _json_safe(v) for k, v in metrics.items()}, indent=2) + "\n")
        except OSError as exc:
            raise _no_space(exc, path) from None
        return path


class EpochLog:
    """Appends epoch rows to an open ``metrics.jsonl``; each row is on disk once ``append`` returns."""

    def __init__(self, fh: TextIO, path: Path | None = None) -> None:
        self.fh = fh
        self.path = path or Path(getattr(fh, "name", "metrics.jsonl"))

    def append(self, row: Mapping[str, Any]) -> None:
        try:
            self.fh.write(json.dumps({k: _json_safe(v) for k, v in row.items()}) + "\n")
            self.fh.flush()
        except OSError as exc:
            raise _no_space(exc, self.path) from None

    def close(self) -> None:
        self.fh.close()
