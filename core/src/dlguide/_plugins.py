"""Finding, loading and reporting plugins.

Each entry point of the ``dlguide`` group is loaded and registered on its own, so one
broken plugin is reported (``dlguide plugins``) and never takes the others down.
``DLGUIDE_STRICT_PLUGINS=1`` makes any failure a hard error; ``DLGUIDE_DISABLE_PLUGINS=a,b``
skips plugins by entry-point name.

A name ``<domain>.<x>`` belongs to the plugin named ``<domain>`` (the entry point ``vision``
owns ``vision.*``), never to whichever plugin loads first: see ``_refusals``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import types
from typing import Any
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from dlguide import hookspecs
from dlguide._errors import PluginError
from dlguide._registry import Entry, Registry, domain_of, duplicate_message

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
    #: whether a plugin that fails later (in ``dlguide_add_commands``) is an error, not skipped
    strict: bool = False

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def drop(self, name: str, status: str) -> None:
        """Skip a loaded plugin that failed after loading: its hooks and names go, its status tells why."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.registry.remove_owner(name)
        for info in self.plugins:
            if info.name == name:
                info.status = status

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
    """A plugin manager with the dlguide hook specs and no plugins; with ``DLGUIDE_TRACE_HOOKS=1``
    every hook call is printed on stderr with the plugins that answered it and its time."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if _env_flag("DLGUIDE_TRACE_HOOKS"):
        trace_hooks(pm)
    return pm


def trace_hooks(pm: pluggy.PluginManager) -> None:
    """``dlguide: hook dlguide_epoch_end -> dlguide.metrics, dlguide.checkpoint (0.41 ms)`` per call."""
    import sys
    import time

    started: list[float] = []

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        started.append(time.perf_counter())

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        ms = (time.perf_counter() - started.pop()) * 1000 if started else 0.0
        names = ", ".join(impl.plugin_name for impl in reversed(impls)) or "no plugin"
        print(f"dlguide: hook {hook_name} -> {names} ({ms:.2f} ms)", file=sys.stderr, flush=True)

    pm.add_hookcall_monitoring(before, after)


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

    # each plugin registers into a registry of its own; who keeps a name is decided over all of
    # them at once (``_refusals``), so the load order never does
    staged: dict[str, Registry] = {}
    for name, source in candidates:
        dist, version = _distribution_of(source)
        info = PluginInfo(name, dist, version)
        infos.append(info)
        if name in disabled:
            info.status = "disabled"
            continue
        plugin: object | None = None
        own = Registry()
        own.owner = name
        try:
            plugin = source.load() if isinstance(source, (EntryPoint, _ModuleSource)) else source
            _check_unknown_hooks(plugin, name)
            pm.register(plugin, name=name)
            info.hooks = _hook_names(pm, plugin)
            if hasattr(plugin, "dlguide_register"):
                plugin.dlguide_register(registry=own)
        # a broken plugin must never take the others down, nor end the process (sys.exit on import)
        except (Exception, SystemExit) as exc:
            if plugin is not None and pm.is_registered(plugin):
                pm.unregister(plugin)
            info.status = _describe(exc)
            if strict:
                raise PluginError(f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
            continue
        staged[name] = own

    installed = {name for name, _ in candidates}
    refused = _refusals(staged, installed)
    runtime = Runtime(pm, registry, infos, strict)
    for name, own in staged.items():
        if name in refused:
            if strict:
                raise PluginError(f"plugin {name!r} failed to load: {refused[name]}")
            runtime.drop(name, f"error: UsageError: {refused[name]}")
        else:
            registry.include(own)
    return runtime


def _refusals(staged: Mapping[str, Registry], installed: set[str]) -> dict[str, str]:
    """Plugin name -> why its registrations are refused, decided over every plugin's at once.

    A name ``<domain>.<x>`` belongs to the plugin named ``<domain>``. When that plugin is
    installed (loaded, broken or disabled), its registration of a name wins over any other
    plugin's, and no other plugin registers a task in its domain; other plugins may add models
    and datasets of new names (the choices of its tasks). A name that several plugins register,
    none of them its domain's owner, is refused for all of them.
    """
    claims: dict[tuple[str, str], list[Entry]] = {}
    for own in staged.values():
        for entry in own.entries():
            claims.setdefault((entry.kind, entry.name), []).append(entry)
    refused: dict[str, str] = {}
    for (kind, name), entries in sorted(claims.items()):
        domain = domain_of(name)
        owner = domain if domain in installed else None
        by_owner = next((e for e in entries if e.owner == owner), None)
        others = sorted((e for e in entries if e.owner != owner), key=lambda e: e.owner)
        for entry in others:
            if by_owner is not None:
                reason = (f"{duplicate_message(by_owner, entry.owner, entry.target)}; the name belongs to "
                          f"{owner!r}, the plugin named after its domain")
            elif owner is not None and kind == "task":
                reason = (f"task {name!r} belongs to plugin {owner!r}, the plugin named after its domain; "
                          f"{entry.owner!r} may not register tasks in the {domain!r} domain")
            elif len(others) > 1:
                claimants = ", ".join(f"{e.owner!r} ({e.target})" for e in others[:-1])
                nobody = f"none of them the plugin named {domain!r}" if domain else "a name without a domain"
                reason = (f"duplicate {kind} {name!r}: registered by {claimants} and {others[-1].owner!r} "
                          f"({others[-1].target}), {nobody}; refused for all")
            else:
                continue
            refused.setdefault(entry.owner, reason)
    return refused


def add_commands(runtime: Runtime, subparsers: argparse._SubParsersAction) -> None:
    """Call each plugin's ``dlguide_add_commands`` on its own, in the hook's order.

    A plugin whose hook raises (or exits) is skipped: the commands it added before the failure
    are taken back and the plugin is dropped, reported by ``dlguide plugins``; the others'
    commands stay. With ``runtime.strict`` the failure is a ``PluginError`` instead.
    """
    pm = runtime.pm
    impls = pm.hook.dlguide_add_commands.get_hookimpls()
    names = list(dict.fromkeys(impl.plugin_name for impl in reversed(impls)))
    for name in names:
        plugin = pm.get_plugin(name)
        if plugin is None:
            continue
        others = [p for p in pm.get_plugins() if p is not plugin]
        choices = set(subparsers.choices)
        listed = len(subparsers._choices_actions)
        try:
            pm.subset_hook_caller("dlguide_add_commands", remove_plugins=others)(subparsers=subparsers)
        except (Exception, SystemExit) as exc:
            if runtime.strict:
                raise PluginError(f"plugin {name!r} failed to add its commands: {type(exc).__name__}: {exc}") from exc
            for added in set(subparsers.choices) - choices:
                del subparsers.choices[added]
            del subparsers._choices_actions[listed:]
            runtime.drop(name, f"{_describe(exc)} (in dlguide_add_commands)")


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

