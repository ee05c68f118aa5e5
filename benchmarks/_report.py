"""Shared by the benchmark scripts: where results go, the CIFAR-10 folder, and writing a section of
docs/benchmarks.md (markdown, date and machine facts come from :mod:`natlearn.markdown`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn import markdown
from natlearn.files import write_record
from natlearn.markdown import hardware, today

__all__ = [
    "CIFAR10",
    "CPU_SMOKE",
    "ROOT",
    "cifar10_folder",
    "cifar10_option",
    "hardware",
    "today",
    "write_json",
    "write_section",
]

ROOT = Path(__file__).resolve().parents[1]
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"  # the offline copy beside the repository


# The GPU scripts' --quick settings: their code path on a CPU with tiny images and network.
CPU_SMOKE = [
    "image_size=72",
    "crop_size=64",
    "arch=small",
    "widths=[8,16]",
    "dim=32",
    "subset=512",
    "batch_size=128",
    "device=cpu",
]


def cifar10_option(parser: argparse.ArgumentParser) -> None:
    """``--cifar10 DIR``: the CIFAR-10 folder of a full run (read by :func:`cifar10_folder`)."""
    parser.add_argument(
        "--cifar10",
        default=str(CIFAR10),
        help="CIFAR-10 folder with train/ and test/ (default ../shared/data/cifar10)",
    )


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


def chosen_rows(text: str, known) -> list[str]:
    """The comma-separated rows of ``text``; exits with one line naming an unknown one."""
    rows = [row for row in text.split(",") if row]
    unknown = [row for row in rows if row not in known]
    if unknown:
        raise SystemExit(
            f"error: unknown row(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return rows


def write_json(name: str, payload: dict) -> Path:
    """``benchmarks/results/<name>.json``, its paths relative to the repository."""
    return write_record(ROOT / "benchmarks" / "results" / f"{name}.json", payload, ROOT)


def write_section(name: str, body: str) -> Path:
    """Replace this script's section of docs/benchmarks.md (between its markers), or append it."""
    return markdown.write_section(ROOT / "docs" / "benchmarks.md", name, body, "# Benchmarks")
