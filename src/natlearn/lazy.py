"""Names a package exports but imports on first use (PEP 562), so importing the package (and
``natlearn --help``) does not pay for torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(
    package: str, table: dict[str, str], namespace: dict
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names are ``table``'s keys, each
    found in the module its value names; ``namespace``: the package's ``globals()``, where a name
    is kept once looked up."""

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
