"""``natlearn filters``: a checkpoint's conv1 filters as a PNG grid."""

from __future__ import annotations

import argparse

from natlearn.cli.common import Command, figure_path, refresh_board

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command("filters", "the conv1 filters of a checkpoint as a PNG grid", run)
    add("checkpoint")
    add("--out", required=True, help="PNG file")


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.reports.figures import figure_title, filters_figure
    from natlearn.training.checkpoint import load_checkpoint, network_from_state

    out = figure_path(args.out)
    state = load_checkpoint(args.checkpoint)
    title = figure_title(state["config"], state["epoch"])
    print(f"wrote {filters_figure(network_from_state(state), out, title)}")
    refresh_board(args.checkpoint)
