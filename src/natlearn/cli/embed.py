"""``natlearn embed``: a layer's features of every image, as .npy plus a .csv index."""

from __future__ import annotations

import argparse

from natlearn.cli.common import Command, check_layers, data_overrides, settings_argument
from natlearn.config import Config

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "embed",
        "a layer's features of every image of a folder or data set, as .npy plus a .csv index",
        run,
        description="natlearn embed CHECKPOINT|RUN data=FOLDER [key=value ...] --out feats.npy",
    )
    add("checkpoint", help="a run folder (its newest checkpoint) or a checkpoint .pt file")
    settings_argument(
        add, "key=value data settings, e.g. data=path/to/images (default: the run's data)"
    )
    add("--layer", default="neck", help="feature layer (default neck; conv layers are pooled)")
    add(
        "--split",
        default="all",
        help="all (default: every image once), train, test, or a data set's own split",
    )
    add("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add("--out", required=True, help="features file (.npy); the index goes beside it as .csv")


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.reports.embedding import embed
    from natlearn.training.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    config = Config.from_checkpoint(state["config"], data_overrides(args.settings))
    check_layers(config, args.checkpoint, layer=[args.layer])
    written = embed(state, args.settings, args.layer, args.out, args.split, args.batch_size)
    print(written.summary())
