"""MkDocs hook: ``<!-- config-keys: TASK -->`` in a page becomes the table of TASK's config keys.

The table is made from the installed task's config class when the site is built, as
``dlguide info TASK`` shows it, so the pages never list a key, default or choice that the code
does not have. ``<!-- config-keys: TASK -->`` lists the keys a task adds to the Trainer's or
gives another default; ``<!-- config-keys: TrainConfig -->`` lists the Trainer's keys, which
every task accepts. An unknown task fails the build.
"""

from __future__ import annotations

import html
import re
from typing import Any

MARKER = re.compile(r"^<!-- config-keys: (?P<name>[\w.-]+) -->$", re.MULTILINE)


def _cell(text: Any, code: bool = False) -> str:
    """Table-cell text on one line; outside a code span (where the table reader leaves '|' alone),
    no '|' or '<' that Markdown would read as syntax."""
    text = str(text).replace("\n", " ")
    return text if code else html.escape(text, quote=False).replace("|", "\\|")


def _table(name: str) -> str:
    from dlguide._config import describe
    from dlguide._plugins import get_runtime
    from dlguide._runs import task_class
    from dlguide._task import TrainConfig

    base = {f.key: f for f in describe(TrainConfig)}
    if name == "TrainConfig":
        fields, registry, task = list(base.values()), None, None
    else:
        registry = get_runtime().registry
        entry = registry.get("task", name)  # an unknown name raises: the build fails
        config = entry.load_config() if entry.config else task_class(name).Config
        fields = [f for f in describe(config) if f.key not in base or f.default != base[f.key].default]
        task = name
    rows = ["| key | type | default | help |", "|---|---|---|---|"]
    for f in fields:
        choices = f.choices
        if f.registry is not None and registry is not None and task is not None:
            choices = tuple(registry.choices(f.registry, task))
        # as dlguide info: registered choices are always listed, fixed ones unless the help names them
        listed = choices and f.registry is None and all(str(c) in f.help for c in choices)
        extra = f" (one of {', '.join(map(str, choices))})" if choices and not listed else ""
        cells = [f"`{f.key}`", f"`{_cell(f.type, True)}`", f"`{_cell(repr(f.default), True)}`", _cell(f.help + extra)]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return MARKER.sub(lambda m: _table(m["name"]), markdown)
