"""Named tasks, models and datasets, registered lazily as ``"package.module:Attr"`` strings.

Nothing is imported at registration, so ``dlguide list`` and ``dlguide --help`` stay free
of torch. ``Registry.load`` imports the target when a run needs it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dlguide._errors import UsageError, did_you_mean

Kind = Literal["task", "model", "dataset"]
KINDS: tuple[Kind, ...] = ("task", "model", "dataset")

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Entry:
    """One registered name: what it is, where it lives, who registered it."""

    kind: Kind
    name: str
    target: str
    summary: str
    owner: str
    demo: Mapping[str, Any] | None = field(default=None, compare=False)
    #: the tasks this model or dataset is built for (``--set model=<short name>`` of those tasks)
    tasks: tuple[str, ...] = ()
    #: a task's config class as ``"package.module:Attr"`` (a torch-free module), when registered
    config: str | None = None
    #: a task's lighter settings for ``dlguide plugin check`` (smaller models or data), over its demo's
    check: Mapping[str, Any] | None = field(default=None, compare=False)

    def load_config(self) -> Any:
        """The task's config class, imported from ``config`` without importing the task."""
        module, _, attr = (self.config or "").partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def short_name(self) -> str:
        """The name without its domain (``cnn`` for ``vision.cnn``): what a task's config names."""
        return self.name.split(".", 1)[1] if "." in self.name else self.name

    def load(self) -> Any:
        """Import and return the target object."""
        module_name, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry:
    """Tasks, models and datasets by name. Plugins receive one in ``dlguide_register`` and call
    ``add_task``, ``add_model`` and ``add_dataset`` on it with ``"package.module:Attr"`` targets,
    which are imported only when a run needs them."""

    def __init__(self) -> None:
        self._entries: dict[Kind, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.owner = "<direct>"

    def add_task(
        self, name: str, target: str, summary: str, *, demo: Mapping[str, Any] | None = None,
        config: str | None = None, check: Mapping[str, Any] | None = None,
    ) -> None:
        """Register a task ``<domain>.<task>``; ``demo`` holds the config overrides of its short demo;
        ``config`` (``"package.module:Attr"``) names its config class in a module that imports no
        torch, so that ``dlguide info`` starts as fast as ``dlguide list``; ``check`` holds config
        overrides that make ``dlguide plugin check``'s short runs of the task light (a smaller
        model or data set), applied over the demo's and the check's own limits."""
        if not _TASK_NAME.match(name):
            raise UsageError(f"task name {name!r} must look like '<domain>.<task>', e.g. 'vision.classify'")
        if check is not None and not isinstance(check, Mapping):
            raise UsageError(f"task {name!r}: check must map config keys to values, not {type(check).__name__}")
        self._add("task", name, target, summary, demo)
        if config is not None or check is not None:
            self._entries["task"][name] = replace(self._entries["task"][name], config=config,
                                                  check=dict(check) if check is not None else None)

    def add_model(self, name: str, target: str, summary: str, *, tasks: str | tuple[str, ...] = ()) -> None:
        """Register a model builder ``<domain>.<name>``, called as ``builder(config, meta) -> nn.Module``.

        ``tasks`` names the tasks that may build it (``--set model=<name>``): a package that
        registers ``vision.mynet`` for ``vision.classify`` adds a choice to that task.
        """
        self._add("model", name, target, summary, None, tasks)

    def add_dataset(self, name: str, target: str, summary: str, *, tasks: str | tuple[str, ...] = ()) -> None:
        """Register a dataset loader ``<domain>.<name>`` for ``tasks`` (``--set dataset=<name>``)."""
        self._add("dataset", name, target, summary, None, tasks)

    def choices(self, kind: Kind, task: str) -> list[str]:
        """Short names of the models or datasets registered for ``task``, sorted."""
        return sorted(e.short_name for e in self._entries[kind].values() if task in e.tasks)

    def _add(self, kind: Kind, name: str, target: str, summary: str, demo: Mapping[str, Any] | None,
             tasks: str | tuple[str, ...] = ()) -> None:
        if not _TARGET.match(target):
            raise UsageError(f"{kind} {name!r}: target {target!r} must look like 'package.module:Attr'")
        if not summary.strip() or "\n" in summary.strip():
            raise UsageError(f"{kind} {name!r}: the summary must be one non-empty line")
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise UsageError(duplicate_message(existing, self.owner, target))
        for_tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        if for_tasks and "." not in name:
            raise UsageError(f"{kind} {name!r} is built for tasks {', '.join(for_tasks)}: name it '<domain>.<name>'")
        self._entries[kind][name] = Entry(kind, name, target, summary.strip(), self.owner, demo, for_tasks)

    def get(self, kind: Kind, name: str) -> Entry:
        """Return the entry, or raise ``UsageError`` naming the closest registered names."""
        try:
            return self._entries[kind][name]
        except KeyError:
            known = self._entries[kind]
            hint = did_you_mean(name, known) or (
                f"; known {kind}s: {', '.join(sorted(known))}" if known else f"; no {kind}s are registered"
            )
            raise UsageError(f"unknown {kind} {name!r}{hint}") from None

    def load(self, kind: Kind, name: str) -> Any:
        """Import the named target."""
        return self.get(kind, name).load()

    def entries(self, kind: Kind | None = None) -> Iterator[Entry]:
        """All entries of one kind (or all kinds), sorted by name."""
        for k in (kind,) if kind else KINDS:
            yield from sorted(self._entries[k].values(), key=lambda e: e.name)

    def names(self, kind: Kind) -> list[str]:
        """The registered names of one kind, sorted."""
        return sorted(self._entries[kind])

    def include(self, other: Registry) -> None:
        """Add every entry of ``other`` (one plugin's registrations), each keeping its owner."""
        added = list(other.entries())
        for entry in added:
            existing = self._entries[entry.kind].get(entry.name)
            if existing is not None:
                raise UsageError(duplicate_message(existing, entry.owner, entry.target))
        for entry in added:
            self._entries[entry.kind][entry.name] = entry

    def remove_owner(self, owner: str) -> None:
        """Drop everything one plugin registered (used when its registration fails half way)."""
        for kind in KINDS:
            self._entries[kind] = {n: e for n, e in self._entries[kind].items() if e.owner != owner}


def domain_of(name: str) -> str | None:
    """The domain of a name (``vision`` for ``vision.classify``), or None for a name without one."""
    return name.split(".", 1)[0] if "." in name else None


def duplicate_message(existing: Entry, owner: str, target: str) -> str:
    """The error of a name registered twice: by ``existing``'s owner first, then by ``owner``."""
    return (f"duplicate {existing.kind} {existing.name!r}: registered by {existing.owner!r} ({existing.target}) "
            f"and by {owner!r} ({target})")
