"""Griffe extension: the docstrings' Sphinx roles (``:class:`X```, ``:func:`~a.b.c```, ...) as
checked cross-references in the API reference.

Each role's target is resolved the way Python resolves the name in the docstring's scope (its
object, then the enclosing class and module, following imports), then written as a Markdown
cross-reference to the object's full path, which mkdocstrings turns into a link. A target that
resolves to nothing in natlearn stays a cross-reference to the name as written, so ``mkdocs build
--strict`` fails on it ("Could not find cross-reference target"): a renamed or misspelt reference
breaks CI. Targets outside natlearn (numpy, torch) and natlearn objects left out of the reference
(private, or not in their module's ``__all__``) are shown as code, unlinked.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`([^`]+)`")
PACKAGE = "natlearn"


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(
                    lambda match, obj=obj: _crossref(obj, match.group(1), loader),
                    obj.docstring.value,
                )


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _crossref(scope: griffe.Object, target: str, loader: griffe.GriffeLoader) -> str:
    short = target.startswith("~")
    name = target.lstrip("~!")
    shown = f"`{name.rsplit('.', 1)[-1] if short else name}`"
    path = _resolve(scope, name)
    if path is not None and path.split(".")[0] != PACKAGE:
        return shown  # numpy, torch, ...: no inventory is loaded, so code, not a link
    if path is None:
        if name.split(".")[0] != PACKAGE and importlib.util.find_spec(name.split(".")[0]):
            return shown
        return f"[{shown}][{name}]"  # unresolvable: left for autorefs to report
    try:
        obj = loader.modules_collection[path]
        if obj.is_alias:
            path, obj = obj.final_target.path, obj.final_target
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return f"[{shown}][{path}]"
    if not _documented(obj):
        return shown
    return f"[{shown}][{path}]"


def _resolve(scope: griffe.Object, name: str) -> str | None:
    """The full path ``name`` means in ``scope``, or None."""
    if name.split(".")[0] == PACKAGE:
        return name
    head, _, rest = name.partition(".")
    try:
        path = scope.resolve(head)
    except griffe.NameResolutionError:
        return None
    return f"{path}.{rest}" if rest else path


def _documented(obj: griffe.Object) -> bool:
    """Whether the reference renders ``obj`` (``filters: public``): it and its parents public."""
    while obj.parent is not None:
        if not obj.is_public:
            return False
        obj = obj.parent
    return True
