"""``natlearn neighbors``: test queries and their nearest training images in a layer's features."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn.cli.common import (
    Command,
    check_layers,
    figure_path,
    refresh_board,
    settings_argument,
)
from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "neighbors",
        "test queries and their nearest training images in a layer's feature space",
        run,
    )
    add("checkpoint")
    settings_argument(add, "key=value data settings")
    add("--layer", default="neck", help="feature layer (default neck: the penultimate features)")
    add("--queries", type=int, default=8)
    add("--k", type=int, default=6)
    add("--out", required=True, help="PNG file")


def run(args: argparse.Namespace) -> None:
    from natlearn.config import resolve_device
    from natlearn.data import ImageRows
    from natlearn.evaluate.features import network_features
    from natlearn.evaluate.probes.run import labelled_splits
    from natlearn.evaluate.reports.board import uses_tensorboard, write_projector
    from natlearn.evaluate.reports.figures import figure_title, neighbours_figure
    from natlearn.evaluate.sources import run_folder
    from natlearn.training.checkpoint import evaluation_config, load_checkpoint, network_from_state

    out = figure_path(args.out)
    for name, value in (("--queries", args.queries), ("--k", args.k)):
        if value < 1:
            raise NatlearnError(f"{name} {value} must be >= 1")
    state = load_checkpoint(args.checkpoint)
    config, _ = evaluation_config(state, args.settings)
    check_layers(config, args.checkpoint, layer=[args.layer])
    device = resolve_device(apply_overrides(Config(), args.settings).device)
    train_set, test_set = labelled_splits(config, state, args.checkpoint)
    if args.k > len(train_set):
        raise NatlearnError(
            f"--k {args.k} is more than the {len(train_set)} training images; lower --k"
        )
    size = config.resolve(train_set.image_size).crop_size
    view = {"crop": config.crop, "scale": config.crop_scale, "workers": config.workers}
    model = network_from_state(state).to(device)
    # A streamed folder is read a batch at a time; the figure decodes only the images it shows.
    (train_features, train_rows), (test_features, test_rows) = (
        network_features(model, data, [args.layer], size, **view) for data in (train_set, test_set)
    )
    train_features, test_features = train_features[args.layer], test_features[args.layer]
    test_images = ImageRows(test_set, test_rows)
    test_labels = test_set.labels[test_rows]
    panels = {args.layer: (train_features, test_features)}
    figure = neighbours_figure(
        panels,
        ImageRows(train_set, train_rows),
        test_images,
        out,
        args.queries,
        args.k,
        labels=(train_set.labels[train_rows], test_labels),
        classes=train_set.classes,
        title=figure_title(state["config"], state["epoch"], args.layer),
    )
    print(f"wrote {figure}")
    folder = run_folder(args.checkpoint, Path(args.checkpoint))
    if uses_tensorboard(folder):
        tag = f"{args.layer}, epoch {state['epoch']}"
        write_projector(folder, test_features, test_images, test_labels, train_set.classes, tag)
    refresh_board(args.checkpoint)
