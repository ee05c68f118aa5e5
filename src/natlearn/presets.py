"""Configs from YAML files: the shipped presets (``natlearn/configs/*.yaml``) or the user's, every
value coerced to its field's type or refused in one line (:func:`natlearn.config.apply_overrides`,
which also reads ``key=value`` overrides from the command line); and each field's and preset's help
text."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError

__all__ = ["PRESETS_DIR", "field_help", "load_preset", "preset_descriptions"]

PRESETS_DIR = Path(__file__).parent / "configs"


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
