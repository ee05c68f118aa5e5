"""Shared by the benchmark scripts: machine facts and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

import torch

from natlearn.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"  # the offline copy beside the repository


def cifar10_folder(path: str, quick: bool) -> Path | None:
    """The CIFAR-10 folder a full benchmark run needs (None for --quick runs, which use digits)."""
    if quick:
        return None
    folder = Path(path)
    if not (folder / "train").is_dir():
        raise SystemExit(f"error: no CIFAR-10 folder at {folder}; pass --cifar10 DIR (train/ and test/ inside) or use --quick")
    return folder


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), cpu)
    return f"{os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def today() -> str:
    return datetime.date.today().isoformat()


def write_json(name: str, payload: dict, folder: str = "benchmarks") -> Path:
    path = ROOT / folder / "results" / f"{name}.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))
    return path


def write_section(name: str, markdown: str, doc: str = "benchmarks.md", title: str = "# Benchmarks") -> Path:
    """Replace this script's section of docs/<doc> (between its markers), or append it."""
    path = ROOT / "docs" / doc
    text = path.read_text() if path.exists() else f"{title}\n\nEach section is written by the script it names; rerun it to refresh.\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path
