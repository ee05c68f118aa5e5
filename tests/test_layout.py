"""The package's layering: no import cycle among natlearn's modules, and the base layer (errors,
choices, config) and the method's core (nat/targets, nat/assignment, nat/loss) import only what
they may.

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``, relative or
absolute, and ``importlib.import_module("natlearn....")`` with a literal name. Importing a package
counts as importing its ``__init__``; ``from package import name`` counts as importing the
submodule ``package.name`` instead when there is one (a module's parent packages are not counted:
Python runs them first, but they are where the module lives, not what it uses).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "natlearn"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def natlearn_modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def imported_names(path: Path, name: str, known: set[str], type_checking: bool = True) -> set[str]:
    """The natlearn modules ``path`` (module ``name``) imports anywhere in its source (with
    ``type_checking=False``: leaving out the ``if TYPE_CHECKING:`` blocks, which never run)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding this module, up level - 1
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):  # a name the package itself defines
                found.add(source)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {module for module in found if module in known and module != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = natlearn_modules(root)
    return {name: imported_names(path, name, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                return path[path.index(following) :] + [following]
            if following not in state and (cycle := visit(following)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_natlearn_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# module -> the natlearn modules it may import (nothing else of natlearn)
BASE = {
    "natlearn.errors": set(),
    "natlearn.choices": {"natlearn.errors"},
    "natlearn.config": {"natlearn.config.schema", "natlearn.config.resolved"},
    "natlearn.config.schema": {
        "natlearn.errors",
        "natlearn.choices",
        "natlearn.config.checks",
        "natlearn.config.resolved",
        "natlearn.config.text",
    },
    "natlearn.config.checks": {"natlearn.errors", "natlearn.choices"},
    "natlearn.config.resolved": {"natlearn.errors", "natlearn.choices"},
    "natlearn.config.text": {"natlearn.errors"},
    "natlearn.nat.targets": {"natlearn.errors"},
    "natlearn.nat.assignment": {"natlearn.errors", "natlearn.nat.targets"},
    "natlearn.nat.loss": {"natlearn.errors"},
}
# ... and under TYPE_CHECKING alone (never run): the choices' Literal types
TYPES_ONLY = {"natlearn.choices"}


@pytest.mark.parametrize("module", sorted(BASE))
def test_the_base_layer_and_the_method_core_import_only_what_they_may(module):
    modules = natlearn_modules()
    path, known = modules[module], set(modules)
    everything = imported_names(path, module, known)
    at_run_time = imported_names(path, module, known, type_checking=False)
    assert at_run_time <= BASE[module], f"{module} imports {sorted(at_run_time - BASE[module])}"
    assert everything <= BASE[module] | TYPES_ONLY, f"{module} imports {sorted(everything)}"


def test_the_method_core_imports_no_third_party_package_but_torch_numpy_scipy():
    allowed = {"torch", "numpy", "scipy", "natlearn", "__future__", *sys.stdlib_module_names}
    for module in ("targets", "assignment", "loss"):
        tree = ast.parse((PACKAGE / "nat" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"nat/{module}.py imports {name}"


def test_no_module_is_named_like_a_public_name():
    """``natlearn.X`` is one thing: no submodule shadows a public name (``natlearn.train`` is the
    function; the loop's module is natlearn.training.trainer)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    (public,) = (
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
    )
    modules = {name.split(".")[1] for name in natlearn_modules() if name.count(".") >= 1}
    assert "train" in public and not modules & set(public)


def test_the_cycle_finder_sees_a_function_local_cycle(tmp_path):
    """A planted cycle (the base layer reaching back into data/ from inside a function, as config
    once did) is found, so the test above would fail on one."""
    package = tmp_path / "natlearn"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "config.py").write_text("def load():\n    from natlearn.data import load_dataset\n")
    (package / "data" / "__init__.py").write_text("from .datasets import load_dataset\n")
    (package / "data" / "datasets.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..config import Config\n"
    )
    assert find_cycle(import_graph(package)) == [
        "natlearn.config",
        "natlearn.data",
        "natlearn.data.datasets",
        "natlearn.config",
    ]
