"""Configs from text: command-line ``key=value`` pairs and the values of YAML files and checkpoints,
coerced to a field's type or refused in one line. Knows types, not :class:`~natlearn.config.Config`
(:func:`~natlearn.config.apply_overrides` gives it each field's)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable
from typing import Literal

import yaml

from natlearn.errors import NatlearnError

__all__ = ["is_text", "key_values", "parse_value", "unknown_key"]


def is_text(kind: object) -> bool:
    """Whether a field of type ``kind`` holds text: a str, or a choice (a Literal of strings)."""
    return kind is str or bool(typing.get_origin(kind) is Literal and typing.get_args(kind))


def key_values(items: Iterable[str], takes_text: Callable[[str], bool]) -> dict[str, object]:
    """``["key=value", ...]`` as a dict; values read as YAML, but for keys that ``takes_text``
    as typed."""
    pairs: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NatlearnError(f"expected key=value, got {item!r} (e.g. epochs=10)")
        key, value = key.strip(), value.strip()
        # str fields take the text as typed: YAML would turn out=on into True, out=1e3 into 1000.0
        pairs[key] = value if takes_text(key) else _yaml_scalar(value)
    return pairs


def _parse_int(raw: object) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError
    return int(raw.strip()) if isinstance(raw, str) else int(raw)  # type: ignore[arg-type]


def parse_value(name: str, kind: object, raw: object) -> object:
    """Coerce a YAML or command-line value of field ``name`` to its type ``kind``, or raise a
    one-line NatlearnError."""
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
    try:
        if typing.get_origin(kind) is tuple:
            items = _yaml_scalar(raw) if isinstance(raw, str) else raw
            items = items.split(",") if isinstance(items, str) else items
            return tuple(
                _parse_int(x) for x in (items if isinstance(items, (list, tuple)) else [items])
            )
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes", "on"):
                return True
            if str(raw).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return _parse_int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if (
            isinstance(raw, bool) or raw is None
        ):  # a YAML file's bare on/yes/null: not the text the user meant
            raise NatlearnError(
                f"{name}={raw!r} is not a string; quote it in YAML, e.g. {name}: 'on'"
            )
        return str(raw)
    except (TypeError, ValueError):
        type_name = getattr(kind, "__name__", str(kind))
        raise NatlearnError(f"{name}={raw!r} is not a valid {type_name}") from None


def _yaml_scalar(text: str) -> object:
    """Command-line values read as YAML, so ``widths=[32,64]``, ``k=null``, ``flip=false`` work."""
    try:
        return yaml.safe_load(text) if text else text
    except yaml.YAMLError:
        return text


def unknown_key(key: str, known: Iterable[str]) -> NatlearnError:
    """The error for a key that is no field, naming the closest one (or every one)."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
    return NatlearnError(f"unknown config key {key!r}{hint}")
