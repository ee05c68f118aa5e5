"""``natlearn evolution``: transfer accuracy of the checkpoints kept along a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn.cli.common import (
    Command,
    data_overrides,
    eval_flags,
    eval_layers,
    eval_settings,
    progress,
    refresh_board,
    settings_argument,
)
from natlearn.config import Config
from natlearn.errors import NatlearnError

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "evolution",
        "transfer accuracy of the checkpoints kept along a run (train with keep_every=N)",
        run,
    )
    add("run_dir")
    settings_argument(add, "key=value data settings")
    add("--out", default=None, help="output folder (default RUN_DIR/evolution)")
    eval_flags(add)


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.reports.evolution import evolution
    from natlearn.training.checkpoint import checkpoint_paths, load_checkpoint

    settings, overrides = eval_settings(args), data_overrides(args.settings)
    settings.progress = progress(overrides)
    run_dir = Path(args.run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise NatlearnError(
            f"{args.run_dir} is not a natlearn run folder (no checkpoints/); "
            "give the out= folder of natlearn train"
        )
    paths = checkpoint_paths(run_dir)
    if paths:
        first = Config.from_checkpoint(load_checkpoint(paths[0])["config"], overrides)
        eval_layers(args, first, str(args.run_dir))
    rows = evolution(args.run_dir, settings, overrides, args.out)
    out = Path(args.out or run_dir / "evolution")
    print(f"evaluated epochs {[row['epoch'] for row in rows]}; wrote {out}")
    refresh_board(str(run_dir))
