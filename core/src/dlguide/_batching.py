"""Dynamic batching of ``dlguide serve``: one queue and one batch worker per served model.

A request's inputs are decoded first (a bad input is the client's error and costs no batch),
then queued. The batch worker takes the oldest request and, while other accepted requests are
still on their way to the queue, waits up to ``batch_timeout_s`` for them (up to
``max_batch_size`` samples); it runs them all as one ``predict_samples`` call, and each
request's part is then encoded. A request alone is run at once: batching costs no latency at
low load, and batches grow with the load. A model's task code (decode, predict, encode) runs on a
thread of its own, one call at a time, so the event loop keeps serving and a task need not be
thread-safe.

A new version is swapped in atomically: a request is decoded, batched and encoded by the
version it started with, so requests in flight during a reload finish on the old version
and later ones run on the new; a batch never mixes versions.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import logging
import mimetypes
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dlguide._errors import UsageError, first_line
from dlguide._inference import RawInput, decode_inputs, encode_outputs, predict_samples

log = logging.getLogger("dlguide.serve")


class ServeError(Exception):
    """A request the server answers with ``status`` and a one-line ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclasses.dataclass(frozen=True)
class Served:
    """One loaded version of a model with its drift monitor."""

    loaded: Any  # dlguide._export.LoadedModel
    monitor: Any  # dlguide._monitor.DriftMonitor

    @property
    def version(self) -> str:
        return self.loaded.version


@dataclasses.dataclass(eq=False)
class _Job:
    served: Served
    raws: list[RawInput]
    samples: list[Any]
    future: asyncio.Future
    started: bool = False
    abandoned: bool = False


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    batch_timeout_s: float
    max_queue: int
    request_timeout_s: float


class ModelSlot:
    """A served name: the version in use and the queue its requests wait in for a batch."""

    def __init__(self, name: str, limits: BatchLimits, metrics: Any) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self.served: Served | None = None
        self.generation = 0  # the last reload this worker applied (see _serve_models.SharedState)
        self.ready = asyncio.Event()
        self.error: str | None = None  # why this worker could not load the model
        self.reload_lock = asyncio.Lock()
        self.waiting = 0  # samples queued (or being decoded for the queue) and not yet in a batch
        self._pending: collections.deque[_Job] = collections.deque()
        self._arrived = asyncio.Event()
        # one thread runs this model's task code (decode, the batches, encode) in turn: a task need not
        # be thread-safe (a fast tokenizer is not), and torch spreads each batch over the cores itself
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"dlguide-batch-{name}")
        self._worker: asyncio.Task | None = None

    def swap(self, served: Served, generation: int) -> None:
        """Serve ``served`` from the next request on; requests already started keep their version."""
        old = self.served
        self.served, self.generation = served, generation
        task = served.loaded.task
        self.metrics.serving(self.name, served.version, task.name, served.loaded.runtime,
                             None if old is None else (old.version, old.loaded.task.name))
        self.error = None
        self.ready.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"dlguide-batch-{self.name}")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- a request ----------------------------------------------------------------------------
    async def predict(self, raws: Sequence[RawInput], deadline: float) -> tuple[Served, list[dict[str, Any]]]:
        """Decode, queue, wait for the batch and return ``(the version used, one result per input)``.
        ``deadline`` is a ``time.monotonic()`` time; past it the answer is a 504."""
        n = len(raws)
        if n > self.limits.max_queue:
            raise ServeError(413, f"{n} inputs in one request; this server takes at most {self.limits.max_queue}")
        if self.waiting + n > self.limits.max_queue:
            raise ServeError(503, f"model {self.name!r} has {self.waiting} samples waiting (max-queue "
                             f"{self.limits.max_queue}); retry shortly", {"Retry-After": "1"})
        self._reserve(n)
        jobs: list[_Job] = []
        try:
            results = await asyncio.wait_for(self._submit(raws, jobs), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServeError(504, f"no answer within the request timeout ({self.limits.request_timeout_s:g} s); "
                             "the server is busy or the inputs are large") from None
        finally:
            if not jobs or not jobs[0].started:
                if jobs:
                    jobs[0].abandoned = True
                self._reserve(-n)
        return jobs[0].served, results

    async def _submit(self, raws: Sequence[RawInput], jobs: list[_Job]) -> list[dict[str, Any]]:
        served = await self.current()
        loop = asyncio.get_running_loop()
        samples = await loop.run_in_executor(self._executor, decode_inputs, served.loaded.task, list(raws))
        job = _Job(served, list(raws), samples, loop.create_future())
        jobs.append(job)
        self._pending.append(job)
        self._arrived.set()
        return await asyncio.shield(job.future)

    async def current(self) -> Served:
        """The version to use, waiting while this worker still loads its first one."""
        while self.served is None:
            if self.error is not None:
                raise ServeError(503, f"model {self.name!r} failed to load: {self.error}")
            await self.ready.wait()
        return self.served

    def _reserve(self, n: int) -> None:
        self.waiting += n
        self.metrics.queue_depth.labels(self.name).set(self.waiting)

    # -- the batch worker ------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            batch = self._collect_first()
            if not batch:
                continue
            size = sum(len(job.samples) for job in batch)
            until = loop.time() + self.limits.batch_timeout_s
            while size < self.limits.max_batch_size:
                if not self._pending:
                    remaining = until - loop.time()
                    # wait only for requests already on their way (accepted, still decoding): a lone
                    # request is not held back for company that is not coming
                    if remaining <= 0 or self.waiting <= size:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                    continue
                job = self._pending[0]
                if job.abandoned:
                    self._pending.popleft()
                    continue
                if job.served is not batch[0].served or size + len(job.samples) > self.limits.max_batch_size:
                    break  # it starts the next batch
                batch.append(self._pending.popleft())
                size += len(job.samples)
            batch = [job for job in batch if not job.abandoned]
            if not batch:
                continue
            for job in batch:
                job.started = True
            self._reserve(-sum(len(job.samples) for job in batch))
            try:
                await loop.run_in_executor(self._executor, self._predict, batch, loop)
            except Exception as exc:  # the executor refused (shutting down): answer rather than hang
                for job in batch:
                    _resolve(job, exc)

    def _collect_first(self) -> list[_Job]:
        while self._pending:
            job = self._pending.popleft()
            if not job.abandoned:
                return [job]
        return []

    def _predict(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """On the batch thread: one predict_samples call for the whole batch, then each job's encode."""
        served = batch[0].served
        task = served.loaded.task
        samples = [sample for job in batch for sample in job.samples]
        try:
            # the task's own limit per predict_step (a 3D volume needs memory) bounds the chunks
            chunk = min(self.limits.max_batch_size, task.predict_batch_size or self.limits.max_batch_size)
            outputs = predict_samples(task, samples, batch_size=chunk)
        except Exception as exc:
            for job in batch:
                loop.call_soon_threadsafe(_resolve, job, _as_serve_error(exc, self.name))
            return
        self.metrics.batch(self.name, len(samples))
        self.metrics.observe(self.name, served.version, served.monitor, samples, outputs)
        start = 0
        for job in batch:
            part = outputs[start:start + len(job.samples)]
            start += len(job.samples)
            try:
                result: Any = encode_files(task, part, job.samples, job.raws)
            except Exception as exc:
                result = _as_serve_error(exc, self.name)
            loop.call_soon_threadsafe(_resolve, job, result)


def _resolve(job: _Job, result: Any) -> None:
    if job.future.done():
        return
    if isinstance(result, BaseException):
        job.future.set_exception(result)
    else:
        job.future.set_result(result)


def _as_serve_error(exc: Exception, model: str) -> ServeError:
    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, UsageError):
        return ServeError(422, first_line(exc))
    log.error("predicting with %s failed", model, exc_info=exc)
    return ServeError(500, f"internal error while predicting with {model!r}: {type(exc).__name__}: {first_line(exc)}")


# -- results that are files ----------------------------------------------------------------------
def encode_files(task: Any, outputs: Sequence[Any], samples: Sequence[Any], raws: Sequence[RawInput]
                 ) -> list[dict[str, Any]]:
    """``encode_outputs``; a task that writes files writes them into a temporary folder, and each
    file comes back inline as ``{"b64", "filename", "media_type"}`` in place of its path."""
    if not task.writes_files:
        return encode_outputs(task, outputs, samples, raws)
    with tempfile.TemporaryDirectory(prefix="dlguide-result-") as folder:
        out_dir = Path(folder).resolve()
        results = encode_outputs(task, outputs, samples, raws, out_dir=out_dir)
        return [_inline(result, out_dir) for result in results]


def _inline(value: Any, out_dir: Path) -> Any:
    if isinstance(value, dict):
        return {k: _inline(v, out_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, out_dir) for v in value]
    if isinstance(value, str) and value.startswith(str(out_dir)):
        path = Path(value)
        if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(out_dir):
            return {"b64": base64.b64encode(path.read_bytes()).decode("ascii"), "filename": path.name,
                    "media_type": media_type(path.name)}
    return value


def media_type(name: str) -> str:
    if name.endswith((".nii", ".nii.gz")):
        return "application/x-nifti" if name.endswith(".nii") else "application/gzip"
    kind, encoding = mimetypes.guess_type(name)
    return kind or ("application/gzip" if encoding == "gzip" else "application/octet-stream")


# -- warm-up ---------------------------------------------------------------------------------------
def warm_up(served: Served, on_error: Callable[[str], None] | None = None) -> bool:
    """One prediction through decode -> predict_step -> encode, so that the first request pays
    no lazy initialisation: on a bundle's first reference input, else on one the task makes
    without data, else on a small input of the task's kind. False when none of them decodes."""
    task = served.loaded.task
    for raw in _warm_up_inputs(served.loaded):
        try:
            samples = decode_inputs(task, [raw])
        except UsageError:
            continue
        encode_files(task, predict_samples(task, samples), samples, [raw])
        return True
    if on_error is not None:
        on_error(f"no warm-up input decodes for task {task.name!r}; its first request pays the warm-up")
    return False


def _warm_up_inputs(loaded: Any) -> Iterator[RawInput]:
    from dlguide._export import read_reference_inputs

    if loaded.manifest:
        yield from read_reference_inputs(Path(loaded.source), loaded.manifest)[:1]
    task = loaded.task
    if not task.reference_from_data:
        try:
            yield from task.reference_inputs(None, 1)[:1]
        except NotImplementedError:
            pass
    kind = task.input_kind
    if kind == "file":
        yield RawInput(value=_grey_png(8), name="warm-up.png", media_type="image/png")
    elif kind == "text":
        yield RawInput(value="warm-up")
    else:
        yield from (RawInput(value=0), RawInput(value="1"))


def _grey_png(side: int) -> bytes:
    """A mid-grey ``side`` x ``side`` PNG (Pillow comes with matplotlib, a dependency of the core)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, format="PNG")
    return buffer.getvalue()
