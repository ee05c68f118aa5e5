"""Markdown for what natlearn and its scripts write: tables, sections of a docs page that a script
replaces in place, and the date and machine a measured section names."""

from __future__ import annotations

import datetime
import os
import platform
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from natlearn.files import atomic_write

__all__ = ["hardware", "marked", "table", "today", "write_section"]


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: ``header``, the ``|---|`` rule, then one line per row. Cells are written
    with ``str`` (format numbers before); a row as wide as the header keeps the columns aligned."""
    lines = [_line(header), "|---" * len(header) + "|", *(_line(row) for row in rows)]
    return "\n".join(lines)


def _line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def write_section(path: Path, name: str, body: str, title: str) -> Path:
    """Replace section ``name`` of the markdown file ``path`` (between its markers
    ``<!-- name:start -->`` and ``<!-- name:end -->``), or append it; a new file starts with
    ``title``. Other sections, written by other scripts, are kept as they are."""
    path = Path(path)
    intro = "Each section is written by the script it names; rerun it to refresh."
    text = path.read_text() if path.exists() else f"{title}\n\n{intro}\n"
    block = marked(name, body)
    start, end = block.splitlines()[0], block.splitlines()[-1]
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text, found = pattern.subn(lambda _: block, text)
    if not found:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def marked(name: str, body: str) -> str:
    """``body`` between the markers of section ``name`` (what :func:`write_section` replaces),
    for a script that writes a whole page holding another script's section."""
    return f"<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->"


def hardware() -> str:
    """The machine a measurement ran on: the GPU, or the CPU cores and torch threads."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = (line for line in cpuinfo.read_text().splitlines() if line.startswith("model name"))
        cpu = next((line.split(":", 1)[1].strip() for line in names), cpu)
    threads = torch.get_num_threads()
    return f"{os.cpu_count()} CPU cores ({cpu}), {threads} torch threads, torch {torch.__version__}"


def today() -> str:
    return datetime.date.today().isoformat()
