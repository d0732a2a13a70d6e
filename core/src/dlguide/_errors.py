"""Errors that reach a person as one line. ``UsageError`` exits 2, the others 1."""

from __future__ import annotations

import builtins
import difflib
import reprlib
from collections.abc import Iterable
from typing import Any


class DlguideError(Exception):
    """Base of every error the command line reports as one clear line."""

    exit_code = 1


class UsageError(DlguideError):
    """The user asked for something that does not exist or is malformed."""

    exit_code = 2


class PluginError(DlguideError):
    """A plugin failed to load or register (raised only in strict mode)."""


class CheckpointError(DlguideError):
    """A checkpoint is missing, corrupt, or was not written by dlguide."""


class RunError(DlguideError):
    """A run stopped for a reason the user must see (NaN loss, interruption)."""


class RunInterrupted(RunError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one line of at most ``limit`` characters (its type name when empty)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _ShortRepr(reprlib.Repr):
    """``repr`` that reads only the start of long strings and the first items of containers."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdeque = 8
        self.maxdict = self.maxset = self.maxfrozenset = 6
        self.maxstring = self.maxlong = self.maxother = limit

    def repr_str(self, x: str, level: int) -> str:
        return builtins.repr(x[: self.maxstring + 1])

    def repr_bytes(self, x: bytes, level: int) -> str:
        return builtins.repr(x[: self.maxstring + 1])

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text
            return f"<int of {x.bit_length()} bits>"


def quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to at most ``limit`` characters with "...".

    Only the start of a long or deeply nested value is read, so a huge value (a YAML alias
    bomb, a megabyte string) costs no more than a short one.
    """
    limit = max(limit, 8)
    text = _ShortRepr(limit).repr(value).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest of ``choices``, or "" when none is close.

    Only names about as close as the best one are offered, so a shared prefix alone
    ("vision.") does not drag in every name of a domain.
    """
    if not isinstance(name, str) or len(name) > 200:  # no name that long is a typo of a short one
        return ""
    scored = []
    for choice in choices:
        matcher = difflib.SequenceMatcher(None, name, choice)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            scored.append((matcher.ratio(), choice))
    scored = sorted((s for s in scored if s[0] >= 0.6), reverse=True)
    if not scored:
        return ""
    best = scored[0][0]
    matches = [choice for score, choice in scored if score >= best - 0.1][:3]
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
