"""Strict loading of nested, typed dataclasses from YAML mappings.

An unknown key is an error that names it and suggests the closest valid key; a value of the wrong type names the
key, the value and the expected type. Fields marked ``ignored(...)`` are accepted (official files carry them) and
produce a one-line warning when present.
"""

import dataclasses
import difflib
import logging
import math
import re
import types
import typing
from collections.abc import Container, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

logger = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the file and the key."""


def ignored(default: T, reason: str) -> T:
    """A field accepted for compatibility but not used; its presence in a file is logged with ``reason``."""
    return dataclasses.field(default=default, metadata={"ignored": reason})


def ignored_keys(cls: type, where: str = "") -> dict[str, str]:
    """The registry of the keys of schema ``cls`` that are accepted but not used (the :func:`ignored` fields,
    nested sections included), each with the reason its warning gives.

    Keys are paths as in a file: ``meta.eval_freq``; an entry of a list of sections is ``mask[].key``.
    """
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        reason = f.metadata.get("ignored")
        if reason:
            out[path] = reason
        for section, suffix in _sections(hints[f.name]):
            out.update(ignored_keys(section, path + suffix))
    return out


def _sections(tp: object) -> list[tuple[type, str]]:
    """The dataclasses an annotation holds, each with the path suffix of its keys (``[]`` inside a list)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return [(tp, "")]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return [s for arg in typing.get_args(tp) for s in _sections(arg)]
    if origin in (list, tuple):
        return [
            (s, suffix + "[]") for arg in typing.get_args(tp) if arg is not Ellipsis for s, suffix in _sections(arg)
        ]
    return []


def _type_name(tp: object) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _same_shape(value: object, tp: object) -> bool:
    """Whether ``value`` is the kind of thing ``tp`` holds (a mapping for a dataclass, a list for a list)."""
    if dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping)
    if typing.get_origin(tp) in (list, tuple):
        return isinstance(value, (list, tuple))
    return False


def _convert(value: Any, tp: object, where: str) -> Any:
    """``value`` (as YAML read it) checked against, and converted to, the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                if _same_shape(value, arg):
                    errors.append(e)
        if len(errors) == 1:
            raise errors[0]  # only one member could hold such a value: its message names the bad key
        raise ConfigError(f"{where}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: got {value!r}, expected one of {', '.join(repr(a) for a in args)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: got {value!r}, expected a mapping of {tp.__name__} keys")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {value!r}, expected a list ({_type_name(tp)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: got {value!r}, expected {len(args)} values ({_type_name(tp)})")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # no schedule, rate or ratio means anything at nan or inf
                raise ConfigError(f"{where}: got {value!r}, expected a finite number")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")


def from_dict(cls: type[D], data: Mapping[str, Any], where: str = "") -> D:
    """Build dataclass ``cls`` from ``data``, strictly. ``where`` prefixes error messages (file and key path)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown key '{path}'{hint}")
        reason = fields[key].metadata.get("ignored")
        if reason:
            logger.warning("config key '%s' is accepted but not used: %s", path, reason)
        kwargs[key] = _convert(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_within(where, str(e), fields)) from None


def _within(where: str, message: str, fields: Container[str]) -> str:
    """A section's message under its path: ``data`` + ``batch_size: ...`` -> ``data.batch_size: ...``."""
    if not where:
        return message
    head = re.match(r"[A-Za-z_]\w*", message)
    return f"{where}.{message}" if head and head.group() in fields else f"{where}: {message}"


def require(ok: bool, key: str, value: object, expected: str) -> None:
    """The rule of one key: unless ``ok``, a :class:`ConfigError` naming the key, the value and what is expected."""
    if not ok:
        raise ConfigError(f"{key}: got {list(value) if isinstance(value, tuple) else value!r}, expected {expected}")


def check_range(
    key: str, pair: tuple[float, float], lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> None:
    """A ``(min, max)`` pair with ``lo <= min <= max <= hi`` (``<`` at an open end)."""
    above = pair[0] > lo if lo_open else pair[0] >= lo
    below = pair[1] < hi if hi_open else pair[1] <= hi
    left = f"{lo} {'<' if lo_open else '<='} min"
    right = "" if hi == math.inf else f" {'<' if hi_open else '<='} {hi}"
    require(above and pair[0] <= pair[1] and below, key, pair, f"{left} <= max{right}")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``, in any case (how the data builders compare names); else did-you-mean."""
    known = {c.lower(): c for c in choices}
    if value.lower() in known:
        return
    close = difflib.get_close_matches(value.lower(), list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {known[close[0]]!r}?" if close else ""
    raise ConfigError(f"{key}: got {value!r}, expected one of {', '.join(choices)} (any case){hint}")


def set_fields(section: "DataclassInstance") -> set[str]:
    """The fields of a config section whose value differs from the field's default (what a file or ``--set``
    changed)."""
    out = set()
    for f in dataclasses.fields(section):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if getattr(section, f.name) != default:
            out.add(f.name)
    return out


def refuse_folder_keys(prefix: str, set_keys: set[str], name_key: str, name: object, use: str) -> None:
    """A built-in data set (``name_key: name``) reads no folder: ``root_path`` / ``image_folder`` among the keys a
    file set (``set_keys``) are a :class:`ConfigError` under ``prefix`` (``"data."``, or ``""`` inside a section,
    whose path the section adds); ``use`` says what the data is for (``train``, ``evaluate``)."""
    for key in ("root_path", "image_folder"):
        if key in set_keys:
            raise ConfigError(
                f"{prefix}{key} is set, but {name_key} {name} is built in and reads no folder: set "
                f"{prefix}{name_key}: ImageFolder to {use} on it, or remove the key"
            )


def warn_unused(key: str, reason: str) -> None:
    """A key that is set but that the chosen path never reads (not an error: nothing contradicts it)."""
    logger.warning("config key '%s' is set but not used: %s", key, reason)


def to_dict(cfg: object) -> Any:
    """A dataclass tree as plain dicts/lists (tuples become lists), ready for YAML."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML; list items by index, ``mask.0.num_blocks=4``) to a
    nested dict, in place; returns it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: '{item}' is not KEY=VALUE (e.g. optimization.lr=1e-4)")
        *parents, last = key.strip().split(".")
        node: Any = data
        for part in parents:
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{source}: '{key}': '{part}' is not an index of a {len(node)}-item list")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{source}: '{key}': '{part}' holds a value, not a section")
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"{source}: '{key}': '{last}' is not an index of a {len(node)}-item list")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def read_yaml_sections(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; a missing file, bad YAML or another top level is a
    :class:`ConfigError` naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw
