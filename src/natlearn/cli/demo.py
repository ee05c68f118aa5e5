"""``natlearn demo``: NAT on the bundled digits against random init, raw pixels and supervised."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn.cli.common import Command, settings_argument
from natlearn.config import apply_overrides
from natlearn.presets import load_preset

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "demo",
        "NAT vs random init vs raw pixels vs supervised on the bundled digits (~1 minute)",
        run,
    )
    add("--out", default="runs/demo", help="output folder (default runs/demo)")
    settings_argument(add, "key=value changes to the digits preset, e.g. seed=3 epochs=100")


def run(args: argparse.Namespace) -> None:
    from natlearn.demo import format_table, run_demo

    results = run_demo(args.out, apply_overrides(load_preset("digits"), args.settings))
    print(format_table(results))
    print(f"NAT (penultimate linear probe): {results['gap_note']}")
    print(
        f"wrote {Path(args.out) / 'results.json'}, results.md, loss_curve.png, neighbours.png "
        f"({results['setup']['seconds']} s)"
    )
