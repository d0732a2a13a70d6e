"""The search space of ``dlguide tune``: config keys and the distributions their values are
drawn from, read from a YAML or TOML file and checked before a study exists.

    lr: {loguniform: [1e-4, 1e-1]}
    hidden: {int: [8, 64], step: 8}      # int also takes log: true
    dropout: {uniform: [0, 0.5]}         # uniform also takes step
    model: {choice: [cnn, lenet5]}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlguide._errors import UsageError, did_you_mean, quote

KINDS = ("loguniform", "uniform", "int", "choice")
OPTIONS = {"loguniform": (), "uniform": ("step",), "int": ("step", "log"), "choice": ()}


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One config key of the search space and the distribution its values are drawn from."""

    key: str
    kind: str  # one of KINDS
    low: float = 0
    high: float = 0
    choices: tuple[Any, ...] = ()
    log: bool = False
    step: float | None = None

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values that show whether the task's config takes this dimension."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def grid(self) -> list[Any]:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise UsageError(f"--sampler grid needs values to list: {self.key!r} is {self.kind} without a step; "
                             "give it a step or make it a choice")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def as_dict(self) -> dict[str, Any]:
        """The space file's form of this dimension."""
        spec: dict[str, Any] = {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}
        if self.kind == "int" and self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec


def _number(value: Any) -> float | None:
    """A finite number from YAML (which reads ``1e-4``, without a dot, as text), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_space(data: Any, where: str) -> list[Dimension]:
    """The dimensions of a space file's mapping, or a one-line UsageError naming the bad entry."""
    if not isinstance(data, Mapping) or not data:
        raise UsageError(f"{where} must map config keys to distributions, e.g. 'lr: {{loguniform: [1e-4, 1e-1]}}'")
    return [_dimension(str(key), spec, where) for key, spec in data.items()]


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    def bad(message: str) -> UsageError:
        return UsageError(f"{where}: {key!r}: {message}")

    if not isinstance(spec, Mapping):
        raise bad(f"expected a distribution ({', '.join(KINDS)}) such as {{uniform: [0, 0.5]}}, not {quote(spec)}")
    unknown = [k for k in spec if k not in KINDS and k not in ("step", "log")]
    if unknown:
        raise bad(f"unknown distribution {quote(unknown[0])}; expected one of {', '.join(KINDS)}"
                  + did_you_mean(str(unknown[0]), KINDS))
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        raise bad(f"expected one distribution ({', '.join(KINDS)}), got {', '.join(kinds) or 'none'}")
    kind, args = kinds[0], spec[kinds[0]]
    extra = [k for k in spec if k != kind and k not in OPTIONS[kind]]
    if extra:
        raise bad(f"{kind} takes no {extra[0]!r}" + (f" (its options: {', '.join(OPTIONS[kind])})" if OPTIONS[kind]
                                                     else ""))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise bad("choice takes a list of values, e.g. {choice: [cnn, lenet5]}")
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in args):
            raise bad("choice values must be strings, numbers, booleans or null")
        if len({repr(v) for v in args}) != len(args):
            raise bad("choice lists a value twice")
        return Dimension(key, kind, choices=tuple(args))
    bounds = [_number(v) for v in args] if isinstance(args, list) and len(args) == 2 else [None]
    if None in bounds:
        raise bad(f"{kind} takes [low, high], two numbers, not {quote(args)}")
    low, high = bounds
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise bad(f"int takes two integers, not {quote(args)}")
    if low > high:
        raise bad(f"low {low:g} is above high {high:g}")
    log = kind == "loguniform" or spec.get("log", False)
    if not isinstance(log, bool):
        raise bad(f"log takes true or false, not {quote(log)}")
    step = spec.get("step")
    if step is not None:
        step = _number(step)
        if step is None or step <= 0 or (kind == "int" and not step.is_integer()):
            raise bad(f"step must be a number above 0{' (an integer)' if kind == 'int' else ''}, "
                      f"not {quote(spec['step'])}")
        if log:
            raise bad("log and step do not go together")
    if log and low <= 0:
        raise bad(f"a log scale needs low above 0, not {low:g}")
    if kind == "int":
        return Dimension(key, kind, int(low), int(high), log=log, step=None if step is None else int(step))
    return Dimension(key, kind, low, high, log=log, step=step)


def read_space(path: str | Path) -> list[Dimension]:
    """The dimensions of a YAML (or ``.toml``) space file."""
    from dlguide._config import read_mapping_file

    return parse_space(read_mapping_file(path, "space file"), f"space file {path}")


def as_text(value: Any) -> str:
    """A sampled value as a ``--set`` value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)
