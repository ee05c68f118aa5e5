"""``natlearn report``: one markdown page of a run."""

from __future__ import annotations

import argparse

from natlearn.cli.common import Command, refresh_board

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command("report", "one markdown page of a run: config, curves, evaluations, figures", run)
    add("run_dir")


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.reports.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    refresh_board(args.run_dir)
