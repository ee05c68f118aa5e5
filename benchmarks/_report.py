"""Shared by the benchmark scripts: where results go, the CIFAR-10 folder, and writing a section of
docs/benchmarks.md (markdown, date and machine facts come from :mod:`natlearn.markdown`)."""

from __future__ import annotations

import json
from pathlib import Path

from natlearn import markdown
from natlearn.files import atomic_write
from natlearn.markdown import hardware, today

__all__ = ["CIFAR10", "ROOT", "cifar10_folder", "hardware", "today", "write_json", "write_section"]

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"  # the offline copy beside the repository


def cifar10_folder(path: str, quick: bool) -> Path | None:
    """The CIFAR-10 folder a full benchmark run needs (None for --quick runs, which use digits)."""
    if quick:
        return None
    folder = Path(path)
    if not (folder / "train").is_dir():
        raise SystemExit(
            f"error: no CIFAR-10 folder at {folder}; "
            "pass --cifar10 DIR (train/ and test/ inside) or use --quick"
        )
    return folder


def write_json(name: str, payload: dict) -> Path:
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))
    return path


def write_section(name: str, body: str) -> Path:
    """Replace this script's section of docs/benchmarks.md (between its markers), or append it."""
    return markdown.write_section(ROOT / "docs" / "benchmarks.md", name, body, "# Benchmarks")
