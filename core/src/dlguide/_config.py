"""Typed run configs: dataclasses with defaults and help text, merged from defaults, a
YAML/TOML file and ``--set key=value`` overrides (dotted keys for nested sections), in
that order. Torch-free, so ``dlguide info`` and config errors stay fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from dlguide._errors import UsageError, did_you_mean, first_line, quote

C = TypeVar("C")

#: the most values (items, keys and scalars, counted through YAML aliases) a config file may hold
MAX_CONFIG_VALUES = 100_000


def option(default: Any, help: str, *, choices: Iterable[Any] | None = None, registry: str | None = None) -> Any:
    """A config field with a default, one line of help, and optionally allowed values.

    Use it as a dataclass field of a ``TrainConfig`` subclass
    (``hidden: int = option(32, "units of the hidden layer")``): the annotation is the type
    that ``--set`` and config files are converted to, and ``dlguide info`` shows the key with its
    type, default and help. A list, dict or dataclass default is copied for each config.
    ``choices`` are the only values accepted. ``registry="model"`` (or ``"dataset"``) takes the
    allowed values from the registry: the models (datasets) registered for the task, so an
    installed package can add choices.
    """
    if registry not in (None, "model", "dataset"):
        raise ValueError(f"option(registry={registry!r}): expected 'model' or 'dataset'")
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "registry": registry}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: dataclasses.replace(d), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_fractions(cfg: Any, *keys: str) -> None:
    """Each of ``keys`` of ``cfg`` must be a number in [0, 1): a share, probability, decay or overlap."""
    for key in keys:
        value = getattr(cfg, key)
        if not 0 <= value < 1:
            raise UsageError(f"invalid value for {key!r}: {value}; expected a number in [0, 1)")


def check_held_out(cfg: Any, what: str = "training data") -> None:
    """``val_fraction`` and ``test_fraction`` are fractions that leave some ``what`` to train on."""
    check_fractions(cfg, "val_fraction", "test_fraction")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise UsageError(f"val_fraction {cfg.val_fraction} and test_fraction {cfg.test_fraction} leave no "
                         f"{what}; their sum must be below 1")


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One config key as ``dlguide info`` shows it."""

    key: str
    type: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    registry: str | None = None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def describe(cls: type) -> list[FieldInfo]:
    """Every key of a config class, nested sections flattened to dotted keys."""
    out: list[FieldInfo] = []
    hints = get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for sub in describe(tp):
                out.append(dataclasses.replace(sub, key=f"{f.name}.{sub.key}"))
            continue
        out.append(
            FieldInfo(f.name, _type_name(tp), getattr(defaults, f.name), f.metadata.get("help", ""),
                      f.metadata.get("choices"), f.metadata.get("registry"))
        )
    return out


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(key: str, tp: Any, value: Any, from_text: bool) -> Any:
    """Turn ``value`` into ``tp`` or raise a one-line UsageError naming key, value and type."""

    def bad(expected: str) -> UsageError:
        return UsageError(f"invalid value for {quote(key)}: {quote(value)} is not {expected}")

    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (from_text and isinstance(value, str) and value.lower() in {"none", "null", ""}):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            with contextlib.suppress(UsageError):
                return _coerce(key, arg, value, from_text)
        raise bad(_type_name(tp))
    if origin is Literal:
        allowed = get_args(tp)
        for a in allowed:
            if value == a or (from_text and str(a) == str(value)):
                return a
        raise UsageError(f"invalid value for {quote(key)}: {quote(value)}; "
                         f"expected one of {', '.join(map(str, allowed))}")
    if origin in (list, tuple):
        if from_text and isinstance(value, str):
            text = value.strip()
            try:
                value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            except (yaml.YAMLError, RecursionError, ValueError):  # ValueError: a number too long
                raise bad("a list") from None
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        coerced = [_coerce(key, item_tp, v, from_text) for v in value]
        return tuple(coerced) if origin is tuple else coerced
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise bad("an int")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad("an int") from None
        raise bad("an int")
    if tp is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise bad("a path")
    raise UsageError(f"config key {key!r} has an unsupported type {_type_name(tp)}")


def _check_choices(key: str, f: dataclasses.Field, value: Any) -> None:
    choices = f.metadata.get("choices")
    if choices and value is not None and value not in choices:
        raise UsageError(
            f"invalid value for {quote(key)}: {quote(value)}; expected one of {', '.join(map(str, choices))}"
            + did_you_mean(_as_name(value), [str(c) for c in choices])
        )


def _as_name(value: Any) -> str:
    """``value`` as text to match against names (a string or a number), else "": the text of
    a list can be as large as the list is once its shared parts are written out."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _apply(obj: Any, data: Mapping[str, Any], prefix: str, from_text: bool) -> Any:
    cls = type(obj)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = key if isinstance(key, str) else quote(key)
        full = f"{prefix}{name}"
        if key not in fields:
            known = [i.key for i in describe(cls)]
            raise UsageError(f"unknown config key {quote(full)}"
                             + (did_you_mean(name, known) or did_you_mean(full, known)))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise UsageError(f"invalid value for {quote(full)}: expected a section of keys, got {quote(value)}")
            changes[key] = _apply(getattr(obj, key), value, f"{full}.", from_text)
            continue
        coerced = _coerce(full, tp, value, from_text)
        _check_choices(full, fields[key], coerced)
        changes[key] = coerced
    return dataclasses.replace(obj, **changes)


def value_at(cfg: Any, key: str) -> Any:
    """The value of a dotted key (``section.key``) of a config."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def changed_keys(before: Any, after: Any) -> list[str]:
    """The dotted keys whose values differ between two configs of the same class."""
    return [info.key for info in describe(type(after)) if value_at(before, info.key) != value_at(after, info.key)]


def check_registered(cfg: Any, choices: Any) -> None:
    """Each key declared with ``option(registry=KIND)`` names one of ``choices(KIND)``, or a
    UsageError lists what is registered (with the closest names)."""
    for info in describe(type(cfg)):
        if info.registry is None:
            continue
        value = value_at(cfg, info.key)
        allowed = choices(info.registry)
        if value not in allowed:
            raise UsageError(f"invalid value for {info.key!r}: {quote(value)}; registered {info.registry}s: "
                             f"{', '.join(allowed) or 'none'}" + did_you_mean(_as_name(value), allowed))


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": "1"}, "c": "x"}`` (values stay text)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"invalid --set {quote(pair)}: expected key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"invalid --set {quote(pair)}: {quote(part)} is set both as a value and a section")
            node = child
        node[parts[-1]] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping of config keys."""
    return read_mapping_file(path, "config file")


def read_mapping_file(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML or TOML file holding one mapping (a config, a tuning space), with every way of
    making it hostile (deep nesting, an alias bomb, a huge number) refused in one line naming ``what``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except RecursionError:
        raise UsageError(f"cannot parse {what} {p}: values nested too deeply") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8, a long number
        reason = "a number has too many digits" if "integer string conversion" in str(exc) else first_line(exc)
        raise UsageError(f"cannot parse {what} {p}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{what} {p} must hold a mapping of keys, not {type(data).__name__}")
    if _count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise UsageError(f"{what} {p} expands to more than {MAX_CONFIG_VALUES} values (through YAML "
                         "aliases or long lists); expected a mapping of keys")
    return data


def _count_values(data: Any, limit: int) -> int:
    """The number of keys, items and scalars in ``data``, each alias counted again; stops past ``limit``.

    A value shared through YAML aliases is one object to the loader but as many values to
    every later step (coercion, the saved config), so it counts each time it is reached.
    """
    count = 1
    stack = [data]
    while stack and count <= limit:
        item = stack.pop()
        if isinstance(item, (dict, list, tuple, set)):
            count += 2 * len(item) if isinstance(item, dict) else len(item)
            if count <= limit:
                stack.extend(item.values() if isinstance(item, dict) else item)
    return count


def resolve(
    cls: type[C],
    *,
    base: Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    overrides: Iterable[str] = (),
    validate: bool = True,
) -> C:
    """Defaults, then ``base`` (saved or demo settings), then ``file``, then ``--set`` overrides.

    ``validate=False`` skips the config's ``validate`` (a finished run's saved config, loaded
    for inference: its values were checked when it ran, and its data files may be gone).
    """
    cfg = cls()
    if base:
        cfg = _apply(cfg, base, "", from_text=False)
    if file is not None:
        cfg = _apply(cfg, read_config_file(file), "", from_text=False)
    cfg = _apply(cfg, parse_overrides(overrides), "", from_text=True)
    check = getattr(cfg, "validate", None)
    if validate and callable(check):
        check()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


__all__ = ["FieldInfo", "describe", "dump_yaml", "option", "parse_overrides", "read_config_file",
           "resolve", "to_dict"]
