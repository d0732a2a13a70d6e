"""The models one ``dlguide serve`` worker holds, and the folder its workers share.

Each worker loads every model (off the event loop), warms it with one prediction and keeps one
:class:`~dlguide._batching.ModelSlot` per served name. The workers share a temporary folder
that ``dlguide serve`` makes and removes: ``models.json``, where a reload writes the wanted path
and generation of a model (every worker polls it every ``POLL_S`` and swaps to that version),
one readiness mark per worker, and prometheus_client's multiprocess files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlguide._batching import ModelSlot, Served, ServeError, warm_up
from dlguide._errors import UsageError, did_you_mean, first_line
from dlguide._serve_metrics import drift_monitor

if TYPE_CHECKING:
    from dlguide._serve import ServeSettings

POLL_S = 0.5  # how often a worker looks for a reload made through another worker

log = logging.getLogger("dlguide.serve")


def load(path: str | Path, *, runtime: str, name: str) -> Any:
    """A run directory or bundle loaded for serving (a ``LoadedModel``); bad path: UsageError."""
    from dlguide._export import load_model

    return load_model(path, runtime=runtime, name=name, device="cpu")


# -- the folder the workers share ------------------------------------------------------------
class SharedState:
    """Reloads and readiness, shared by the workers through files in the serve's temporary folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.models = self.folder / "models.json"
        self.ready = self.folder / "ready"

    def wanted(self) -> dict[str, dict[str, Any]]:
        """Model name -> ``{"path", "generation"}`` of the last reload of each model."""
        try:
            return json.loads(self.models.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def publish(self, name: str, path: str) -> int:
        """Record a reload of ``name`` to ``path``; returns its generation (one more than the last)."""
        with self._locked():
            state = self.wanted()
            generation = int(state.get(name, {}).get("generation", 0)) + 1
            state[name] = {"path": path, "generation": generation}
            temp = self.models.with_suffix(f".{os.getpid()}.tmp")
            temp.write_text(json.dumps(state))
            os.replace(temp, self.models)  # the pollers never read half a file
        return generation

    @contextlib.contextmanager
    def _locked(self) -> Any:
        try:
            import fcntl
        except ImportError:  # Windows: one worker per reload at a time is all the lock guards
            yield
            return
        with open(self.folder / "models.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def mark_ready(self, ready: bool) -> None:
        self.ready.mkdir(exist_ok=True)
        mark = self.ready / str(os.getpid())
        if ready:
            mark.touch()
        else:
            mark.unlink(missing_ok=True)

    def ready_workers(self) -> int:
        """Workers alive that have every model loaded and warmed."""
        count = 0
        for mark in self.ready.glob("*") if self.ready.is_dir() else ():
            try:
                os.kill(int(mark.name), 0)
            except ProcessLookupError:
                mark.unlink(missing_ok=True)
                continue
            except (PermissionError, ValueError):
                pass
            count += 1
        return count


# -- one worker --------------------------------------------------------------------------------
class ModelServer:
    """The models one worker serves and what its routes do with them."""

    def __init__(self, settings: ServeSettings, preloaded: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.state = SharedState(settings.state_dir)
        self.preloaded = dict(preloaded or {})
        self.slots: dict[str, ModelSlot] = {}
        self.metrics: Any = None
        self.roots = [Path(root).resolve() for root in settings.allowed_roots]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> Any:
        from dlguide._serve_metrics import ServeMetrics

        self.metrics = ServeMetrics()
        self.slots = {name: ModelSlot(name, self.settings.limits, self.metrics) for name, _ in self.settings.models}
        background = asyncio.get_running_loop().create_task(self._start_and_poll())
        try:
            yield
        finally:
            background.cancel()
            self.state.mark_ready(False)
            for slot in self.slots.values():
                slot.close()
            self.metrics.close()

    def prepare(self, loaded: Any) -> Served:
        """A loaded model with its drift monitor, warmed with one prediction."""
        served = Served(loaded, drift_monitor(loaded))
        warm_up(served, log.warning)
        return served

    def load(self, path: str, name: str) -> Served:
        return self.prepare(load(path, runtime=self.settings.runtime, name=name))

    async def _start_and_poll(self) -> None:
        wanted = self.state.wanted()  # a worker started after a reload serves the reloaded version
        for name, path in self.settings.models:
            slot, entry = self.slots[name], wanted.get(name)
            try:
                if entry is not None:
                    served, generation = await asyncio.to_thread(self.load, entry["path"], name), entry["generation"]
                elif name in self.preloaded:
                    served, generation = await asyncio.to_thread(self.prepare, self.preloaded.pop(name)), 0
                else:
                    served, generation = await asyncio.to_thread(self.load, path, name), 0
            except Exception as exc:
                log.error("model %s failed to load: %s", name, first_line(exc))
                slot.error = first_line(exc)
                slot.ready.set()
                continue
            slot.swap(served, generation)
            log.info("%s: %s version %s ready", name, served.loaded.task.name, served.version)
        self.state.mark_ready(all(slot.served is not None for slot in self.slots.values()))
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self.metrics.refresh_process()
                for name, entry in self.state.wanted().items():
                    slot = self.slots.get(name)
                    if slot is not None and entry["generation"] > slot.generation:
                        async with slot.reload_lock:
                            if entry["generation"] > slot.generation:
                                await self._follow(slot, entry)
            except Exception:  # one bad poll must not end the polling
                log.exception("worker %d could not read the shared state", os.getpid())

    async def _follow(self, slot: ModelSlot, entry: dict[str, Any]) -> None:
        """Swap to a version another worker reloaded (it loaded there, so it should load here too)."""
        try:
            served = await asyncio.to_thread(self.load, entry["path"], slot.name)
        except Exception as exc:
            log.error("reload of %s to %s failed in worker %d: %s", slot.name, entry["path"], os.getpid(),
                      first_line(exc))
            slot.generation = entry["generation"]
            return
        slot.swap(served, entry["generation"])
        log.info("%s now serves version %s (reload %d)", slot.name, served.version, entry["generation"])

    # -- what the routes call -------------------------------------------------------------------
    def authorize(self, request: Any) -> None:
        token = self.settings.token
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise ServeError(401, "missing or wrong token: send the header 'Authorization: Bearer <token>'",
                             {"WWW-Authenticate": "Bearer"})

    def slot(self, name: str, request: Any | None = None) -> ModelSlot:
        slot = self.slots.get(name)
        if slot is None:
            raise ServeError(404, f"no model named {name!r}; served: {', '.join(self.slots)}"
                             f"{did_you_mean(name, self.slots)}")
        if request is not None:
            request.scope["dlguide.model"] = name  # the metrics label of this request
        return slot

    def describe(self, slot: ModelSlot) -> dict[str, Any]:
        if slot.served is None:
            return {"name": slot.name, "ready": False, "error": slot.error}
        loaded = slot.served.loaded
        return {"name": slot.name, "task": loaded.task.name, "version": loaded.version,
                "input_kind": loaded.task.input_kind, "writes_files": bool(loaded.task.writes_files),
                "runtime": loaded.runtime, "ready": True}

    async def predict(self, slot: ModelSlot, raws: list[Any], deadline: float) -> dict[str, Any]:
        served, predictions = await slot.predict(raws, deadline)
        return {"model": slot.name, "version": served.version, "predictions": predictions}

    async def reload(self, slot: ModelSlot, path: Any) -> dict[str, Any]:
        """Load ``path`` (under an allowed root) off the event loop and swap it in; every other
        worker follows within ``POLL_S``. A failed load leaves the old version serving."""
        if not isinstance(path, str) or not path.strip():
            raise ServeError(422, "'path' must name a run directory or bundle on the server")
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise ServeError(403, f"{path} is outside the folders models may be loaded from "
                             f"({', '.join(map(str, self.roots))}); start the server with --allowed-root")
        name = slot.name
        async with slot.reload_lock:
            try:
                served = await asyncio.to_thread(self.load, str(resolved), name)
            except Exception as exc:  # the new version is unusable: the client hears why, the old one serves on
                if not isinstance(exc, UsageError):
                    log.error("reloading %s from %s failed", name, resolved, exc_info=exc)
                raise ServeError(422, f"{name} keeps version "
                                 f"{slot.served.version if slot.served else '(none)'}: loading {path} failed: "
                                 f"{first_line(exc)}") from None
            previous = slot.served.version if slot.served is not None else None
            generation = await asyncio.to_thread(self.state.publish, name, str(resolved))
            slot.swap(served, generation)
        self.state.mark_ready(all(s.served is not None for s in self.slots.values()))
        log.info("%s reloaded from %s: version %s (was %s)", name, resolved, served.version, previous)
        return {"model": name, "version": served.version, "previous": previous, "generation": generation}

    def monitor(self, name: str) -> dict[str, Any]:
        slot = self.slot(name)
        if slot.served is None:
            raise ServeError(503, f"model {name!r} is not loaded yet")
        summary = self.metrics.drift_summary(name, slot.served.version, slot.served.monitor)
        return {"model": name, "version": slot.served.version, **summary}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        models = {name: (slot.served.version if slot.served else f"failed: {slot.error}" if slot.error else "loading")
                  for name, slot in self.slots.items()}
        workers = self.state.ready_workers()
        ready = all(s.served is not None for s in self.slots.values()) and workers >= self.settings.workers
        return (200 if ready else 503), {"status": "ready" if ready else "not ready", "models": models,
                                         "workers_ready": workers, "workers": self.settings.workers}

    def scrape(self) -> bytes:
        served = {name: (slot.served.version, slot.served.monitor) for name, slot in self.slots.items()
                  if slot.served is not None}
        return self.metrics.render(served)
