"""Configs from text: YAML presets (``natlearn/configs/*.yaml``), ``key=value`` overrides from the
command line, and each field's help text, every value coerced to its field's type or refused in one
line."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path

import yaml

from natlearn.config import FIELD_TYPES, Config, choices
from natlearn.errors import NatlearnError

__all__ = ["PRESETS_DIR", "apply_overrides", "field_help", "load_preset", "preset_descriptions"]

PRESETS_DIR = Path(__file__).parent / "configs"


def _is_text(name: str) -> bool:
    return FIELD_TYPES[name] is str or bool(choices(name))


def _parse_int(raw: object) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError
    return int(raw.strip()) if isinstance(raw, str) else int(raw)  # type: ignore[arg-type]


def _parse_value(name: str, raw: object) -> object:
    """Coerce a YAML or command-line value to the field's type, or raise a one-line
    NatlearnError."""
    kind = FIELD_TYPES[name]
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


def _unknown_key(key: str) -> NatlearnError:
    close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_TYPES)}"
    return NatlearnError(f"unknown config key {key!r}{hint}")


def apply_overrides(config: Config, overrides: dict[str, object] | list[str]) -> Config:
    """A copy of ``config`` with fields replaced, from a dict or from ``["key=value", ...]``."""
    if isinstance(overrides, list):
        pairs: dict[str, object] = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise NatlearnError(f"expected key=value, got {item!r} (e.g. epochs=10)")
            key, value = key.strip(), value.strip()
            # str fields take the text as typed: YAML would turn out=on into True, out=1e3 into
            # 1000.0
            pairs[key] = value if key in FIELD_TYPES and _is_text(key) else _yaml_scalar(value)
        overrides = pairs
    changes = {}
    for key, raw in overrides.items():
        if key not in FIELD_TYPES:
            raise _unknown_key(key)
        changes[key] = _parse_value(key, raw)
    return dataclasses.replace(config, **changes)


def load_preset(name_or_path: str) -> Config:
    """A Config from a YAML file, or from a preset shipped in natlearn/configs by name."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise NatlearnError(
            f"config {name_or_path!r} not found; give a YAML file or one of the presets: {shipped}"
        )
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise NatlearnError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise NatlearnError(
            f"{path} must hold a mapping of config keys, got {type(values).__name__}"
        )
    return apply_overrides(Config(), values)


def field_help() -> dict[str, str]:
    """Field name -> the docstring below it in this file (for ``natlearn train --help``)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Config))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = following.value.value  # type: ignore[attr-defined]
    return docs


def preset_descriptions() -> dict[str, str]:
    """Preset name -> one line on it (for ``--help``): the headline of the comment that opens its
    YAML file (its first sentence, up to a colon)."""
    descriptions = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        words = []
        for line in path.read_text().splitlines():
            if not line.startswith("#") or line[1:].strip().startswith("data:"):
                break  # the comment ends, or goes on to where the data lives
            words.append(line[1:].strip())
        sentence = re.split(r"\.(?:\s|$)", " ".join(words), maxsplit=1)[0]
        descriptions[path.stem] = sentence.split(": ", 1)[0]
    return descriptions
