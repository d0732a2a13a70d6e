"""Checkpoint files: written atomically, read with ``weights_only=True``, checked for origin.

Also the random-number state of python, numpy and torch, kept in forms that
``weights_only`` loading accepts (tensors, lists, ints), so resume is exact.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from dlguide import __version__
from dlguide._errors import CheckpointError

FORMAT = 1


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` through a temporary file and a rename: the old file survives a failure.

    No fsync: the rename already protects against a crash of the process, which is the
    failure a training run meets; a per-epoch fsync would cost more than the epoch on small data.
    """
    with _atomic_file(path) as fh:
        torch.save(obj, fh)


def serialize(obj: Any) -> memoryview:
    """``obj`` as the bytes ``torch.save`` writes: a copy that training may outrun."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def atomic_write(data: memoryview | bytes, path: Path) -> None:
    """Write serialized bytes to ``path`` atomically, as ``atomic_save`` does.

    This holds python's lock only for moments (the write itself releases it), so a thread
    can do it while training goes on without slowing the training thread.
    """
    with _atomic_file(path) as fh:
        fh.write(data)


def detached_copy(obj: Any, into: Any = None) -> Any:
    """A copy of a checkpoint's state with every tensor cloned to the CPU, kept while training
    goes on changing the originals (dicts keep their type and a state dict's versions).

    ``into`` is an earlier copy that is no longer needed: its CPU tensors of the same shape and
    dtype are copied into instead of allocated again (a best epoch after a best epoch reuses the
    memory, which is already mapped and warm in the caches).
    """
    if isinstance(obj, torch.Tensor):
        if (isinstance(into, torch.Tensor) and into.device.type == "cpu" and into.layout == obj.layout == torch.strided
                and into.shape == obj.shape and into.dtype == obj.dtype and into.is_contiguous()):
            return into.copy_(obj.detach())
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        earlier = into if isinstance(into, dict) else {}
        out = type(obj)((key, detached_copy(value, earlier.get(key))) for key, value in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        earlier = into if isinstance(into, (list, tuple)) and len(into) == len(obj) else [None] * len(obj)
        return type(obj)(detached_copy(value, old) for value, old in zip(obj, earlier))
    return obj


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Runs checkpoint writes in order on one background thread, so that training goes on while
    the bytes reach the disk. Callers hand over serialized bytes: pickling on the thread would
    hold python's lock, and the training thread would wait for it at every operation.

    ``wait`` blocks until every write so far is done and re-raises the first failure; the
    writes queued after a failure are skipped (a ``best`` link must not name the previous
    file), and the atomic rename means the previous files stay whole."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._failed = False

    def submit(self, job: Callable[[], None]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlguide-checkpoint")
        self._pending.append(self._pool.submit(self._run, job))

    def _run(self, job: Callable[[], None]) -> None:
        if self._failed:
            return
        try:
            job()
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        self._failed = False
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def atomic_link(source: Path, path: Path) -> None:
    """Make ``path`` a second name of ``source``'s current contents, atomically.

    ``source`` is later replaced by rename, which gives it a new file, so ``path`` keeps
    these bytes. Falls back to a copy where hard links are not supported.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SAFE_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype, torch.device)


def unsafe_entry(obj: Any, where: str = "checkpoint") -> tuple[str, str] | None:
    """Where in ``obj`` the first value lies that ``weights_only`` loading refuses (a numpy
    array, a path, an arbitrary object), and its type; None when every value loads.

    Walks the structure only: tensors are leaves, so this costs nothing beside a save.
    """
    if isinstance(obj, _SAFE_LEAVES):
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, _SAFE_LEAVES):
                return f"{where} key {key!r}"[:160], type(key).__name__
            found = unsafe_entry(value, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            found = unsafe_entry(value, f"{where}[{i}]")
            if found:
                return found
        return None
    return where[:160], type(obj).__name__


def stamp(task: str) -> dict[str, Any]:
    """The header that marks a checkpoint as dlguide's."""
    return {"format": FORMAT, "version": __version__, "task": task}


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Load a dlguide checkpoint safely, or raise CheckpointError saying what is wrong."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a checkpoint (torch's zip format was expected; it starts with "
                              f"{magic!r}){_fallback(path)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is corrupt, cut short by a crash or a full disk ({reason[:100]})"
                              f"{_fallback(path)}") from None
    header = ckpt.get("dlguide") if isinstance(ckpt, dict) else None
    if not isinstance(header, dict) or "task" not in header:
        raise CheckpointError(f"{path} is not a dlguide checkpoint (no dlguide header)")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {header.get('format')}, this dlguide reads {FORMAT}")
    if task is not None and header["task"] != task:
        raise CheckpointError(f"{path} belongs to task {header['task']!r}, not {task!r}")
    return ckpt


def _fallback(path: Path) -> str:
    """What a user can do about an unreadable ``last.ckpt`` beside a best one."""
    best = path.with_name("best.ckpt")
    if path.name == "last.ckpt" and best.is_file():
        return f"; to continue from the best epoch instead, copy {best} over it and resume"
    return ""


def capture_rng() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    state = np.random.get_state(legacy=True)
    rng: dict[str, Any] = {
        # python's 625 state words as one tensor: a tuple of ints pickles number by number
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": torch.from_numpy(np.asarray(state[1], dtype=np.int64)), "pos": int(state[2]),
                  "has_gauss": int(state[3]), "cached": float(state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    py = rng["python"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    else:  # checkpoints written before the state was kept as a tensor
        version, internal, gauss = py
        random.setstate((version, tuple(internal), gauss))
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
