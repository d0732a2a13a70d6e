"""Finding, loading and reporting plugins.

Each entry point of the ``dlguide`` group is loaded and registered on its own, so one
broken plugin is reported (``dlguide plugins``) and never takes the others down.
``DLGUIDE_STRICT_PLUGINS=1`` makes any failure a hard error; ``DLGUIDE_DISABLE_PLUGINS=a,b``
skips plugins by entry-point name.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from dlguide import hookspecs
from dlguide._errors import PluginError
from dlguide._registry import Registry

GROUP = "dlguide"


@dataclass
class PluginInfo:
    """What ``dlguide plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "status": self.status,
        }


@dataclass
class Runtime:
    """A plugin manager with its plugins loaded and their registrations collected."""

    pm: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def run_manager(self, run_plugins: Mapping[str, object] = {}) -> pluggy.PluginManager:  # noqa: B006
        """A plugin manager of one run: the installed plugins plus that run's own (its built-in
        callbacks), so a run started inside another one neither sees nor adds to its hooks."""
        pm = new_plugin_manager()
        for name, plugin in self.pm.list_name_plugin():
            if plugin is not None:
                pm.register(plugin, name=name)
        for name, plugin in run_plugins.items():
            pm.register(plugin, name=name)
        return pm


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the dlguide hook specs and no plugins."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get("DLGUIDE_DISABLE_PLUGINS", "").split(",") if n.strip()}


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


def _describe(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}".replace("\n", " ")


def _check_unknown_hooks(plugin: object, name: str) -> None:
    """pluggy accepts unknown ``dlguide_*`` names silently; a typo should not be silent."""
    known = {n for n in dir(hookspecs) if n.startswith("dlguide_")}
    for attr in dir(plugin):
        if attr.startswith("dlguide_") and callable(getattr(plugin, attr)) and attr not in known:
            raise PluginError(f"plugin {name!r} implements unknown hook {attr!r}")


class _ModuleSource:
    """A plugin named in ``DLGUIDE_PLUGINS`` by its module (as ``PYTEST_PLUGINS`` names them)."""

    def __init__(self, module: str) -> None:
        self.module = module

    def load(self) -> object:
        import importlib

        return importlib.import_module(self.module)


def _env_modules() -> list[str]:
    return [n.strip() for n in os.environ.get("DLGUIDE_PLUGINS", "").split(",") if n.strip()]


def load_runtime(
    *,
    strict: bool | None = None,
    disable: Iterable[str] | None = None,
    extra: Mapping[str, object] | None = None,
    use_entry_points: bool = True,
) -> Runtime:
    """Load the ``dlguide`` entry points (and ``extra`` name -> module) into a new Runtime.

    ``strict`` and ``disable`` default to ``DLGUIDE_STRICT_PLUGINS`` and
    ``DLGUIDE_DISABLE_PLUGINS``; with entry points, the modules listed (comma-separated) in
    ``DLGUIDE_PLUGINS`` are loaded too.
    """
    strict = _env_flag("DLGUIDE_STRICT_PLUGINS") if strict is None else strict
    disabled = _disabled_names() if disable is None else set(disable)
    pm = new_plugin_manager()
    registry = Registry()
    infos: list[PluginInfo] = []

    candidates: list[tuple[str, EntryPoint | object]] = []
    if use_entry_points:
        seen: set[str] = set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name not in seen:  # the same dist on sys.path twice lists its entry points twice
                seen.add(ep.name)
                candidates.append((ep.name, ep))
        # modules named in DLGUIDE_PLUGINS load after the installed ones: a plugin under development
        # (or a test's) without an installed entry point, in every process of a distributed run too
        candidates.extend((module, _ModuleSource(module)) for module in _env_modules() if module not in seen)
    candidates.extend((extra or {}).items())

    for name, source in candidates:
        dist, version = _distribution_of(source)
        info = PluginInfo(name, dist, version)
        infos.append(info)
        if name in disabled:
            info.status = "disabled"
            continue
        plugin: object | None = None
        try:
            plugin = source.load() if isinstance(source, (EntryPoint, _ModuleSource)) else source
            _check_unknown_hooks(plugin, name)
            pm.register(plugin, name=name)
            info.hooks = _hook_names(pm, plugin)
            registry.owner = name
            if hasattr(plugin, "dlguide_register"):
                plugin.dlguide_register(registry=registry)
        except Exception as exc:  # a broken plugin must never take the others down
            registry.remove_owner(name)
            if plugin is not None and pm.is_registered(plugin):
                pm.unregister(plugin)
            info.status = _describe(exc)
            if strict:
                raise PluginError(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
        finally:
            registry.owner = "<direct>"
    return Runtime(pm, registry, infos)


def _distribution_of(source: EntryPoint | object) -> tuple[str, str]:
    if isinstance(source, EntryPoint) and source.dist is not None:
        return source.dist.name, source.dist.version
    if isinstance(source, _ModuleSource):
        return "DLGUIDE_PLUGINS", "-"
    module = source if isinstance(source, types.ModuleType) else None
    return (module.__name__ if module else "<local>"), "-"


_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, loaded from entry points on first use."""
    global _current
    if _current is None:
        _current = load_runtime()
    return _current


@contextlib.contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Make ``runtime`` the current one inside the block (tests, isolated plugin loading)."""
    global _current
    previous, _current = _current, runtime
    try:
        yield runtime
    finally:
        _current = previous

