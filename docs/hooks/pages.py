"""MkDocs hook: pages made at build time, so nothing is written twice.

- The README (the entry point on GitHub) is the single source of the guide: its text before the
  first ``## `` heading is the home page, and each ``## `` section is one page under ``guide/``
  (headings raised one level, ``docs/`` links made relative to the page).
- The API reference is one page per module of ``src/natlearn`` (``::: module``, rendered by
  mkdocstrings from the docstrings), so a new module is documented without editing anything.

``mkdocs.yml`` marks where each group goes in the navigation with a placeholder entry
(``README.md`` and ``api/``); :func:`on_config` replaces them with the pages.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "natlearn"
GUIDE_PLACEHOLDER, API_PLACEHOLDER = "README.md", "api/"
# The core modules first (the paper's method), then the rest in alphabetical order.
CORE = [
    "natlearn",
    "natlearn.nat",
    "natlearn.nat.targets",
    "natlearn.nat.assignment",
    "natlearn.nat.loss",
    "natlearn.nat.module",
]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def readme_pages() -> list[tuple[str, str, str]]:
    """(title, page path, Markdown) for the README's intro and each of its ``## `` sections."""
    intro: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fence = None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        marker = re.match(r"\s*(```|~~~)", line)
        if marker and fence is None:
            fence = marker.group(1)
        elif marker and line.strip().startswith(fence):
            fence = None
        if fence is None and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            # inside a section page its ## heading is the page title, so ### becomes ##
            raised = line[1:] if fence is None and line.startswith("###") else line
            sections[-1][1].append(raised)
        else:
            intro.append(line)
    if not sections:
        raise PluginError("README.md has no '## ' sections to make guide pages from")
    pages = [("Home", "index.md", _relink("\n".join(intro), depth=0))]
    for title, lines in sections:
        text = f"# {title}\n" + "\n".join(lines)
        pages.append((title, f"guide/{slug(title)}.md", _relink(text, depth=1)))
    return pages


def _relink(text: str, depth: int) -> str:
    """README links into ``docs/`` made relative to a page ``depth`` folders below ``docs/``."""
    return re.sub(r"\]\(docs/", "](" + "../" * depth, text)


def api_modules() -> list[str]:
    """Every module of the package, core first, as dotted names (``__main__`` left out)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [name for name in CORE if name in names] + sorted(set(names) - set(CORE))


def api_page(module: str) -> str:
    return f"api/{module}.md"


def _replace(nav: list, placeholder: str, entries: list) -> bool:
    for i, item in enumerate(nav):
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if value == placeholder:
                nav[i] = {title: entries}
                return True
            if isinstance(value, list) and _replace(value, placeholder, entries):
                return True
    return False


_made: dict[str, list] = {}  # worked out once per build, in on_config, so nav and files agree


def on_config(config):
    _made["guide"], _made["api"] = readme_pages(), api_modules()
    nav = config["nav"]
    guide = [{title: path} for title, path, _ in _made["guide"][1:]]
    api = [{module: api_page(module)} for module in _made["api"]]
    for placeholder, entries in ((GUIDE_PLACEHOLDER, guide), (API_PLACEHOLDER, api)):
        if nav is not None and not _replace(nav, placeholder, entries):
            raise PluginError(f"mkdocs.yml: no nav entry '{placeholder}' to put the pages at")
    return config


def on_files(files, config):
    for _, path, text in _made["guide"]:
        files.append(File.generated(config, path, content=text))
    for module in _made["api"]:
        files.append(File.generated(config, api_page(module), content=f"::: {module}\n"))
    return files
