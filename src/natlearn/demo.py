"""`natlearn demo`: NAT on the bundled digits, scored against random init, raw pixels and
supervised.

Every figure in the table is measured by the run: one fixed train/test split, the same network,
the same linear probe (and weighted k-NN) on frozen features for every row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from natlearn.config import Config
from natlearn.data import ImageDataset, load_split
from natlearn.evaluate import extract_features, knn_classify, linear_probe
from natlearn.evaluate.reports.compare import best_linear
from natlearn.evaluate.reports.figures import figure_title, neighbours_figure, training_curves
from natlearn.evaluate.uncertainty import gap_note, with_error
from natlearn.files import atomic_write
from natlearn.markdown import table
from natlearn.models import Network, initial_model
from natlearn.presets import load_preset
from natlearn.training.trainer import train

__all__ = ["ROWS", "run_demo", "format_table"]

REPRESENTATION = "neck"  # the penultimate features: what NAT trains and what a user transfers
ROWS = ("nat", "random_init", "raw_pixels", "supervised")


def _score(
    train_features: dict[str, torch.Tensor],
    test_features: dict[str, torch.Tensor],
    train_set: ImageDataset,
    test_set: ImageDataset,
) -> dict:
    probes = {
        name: linear_probe(
            train_features[name], train_set.labels, test_features[name], test_set.labels
        )
        for name in train_features
    }
    headline = REPRESENTATION if REPRESENTATION in probes else next(iter(probes))
    best_layer, _ = best_linear(
        {"protocols": {"linear": {name: probe.as_dict() for name, probe in probes.items()}}}
    )
    return {
        "linear_probe_top1": probes[headline].top1,
        "knn_top1": knn_classify(
            train_features[headline],
            train_set.labels,
            test_features[headline],
            test_set.labels,
            k=20,
        ).top1,
        "feature_dims": int(train_features[headline].shape[1]),
        "best_layer": best_layer,
        "best_layer_top1": probes[best_layer].top1,
        "per_layer_top1": {name: probe.top1 for name, probe in probes.items()},
        "per_layer_held_out_top1": {name: probe.held_out_top1 for name, probe in probes.items()},
        "probe_solver": probes[headline].solver,
    }


def _probe_description(solver: str) -> str:
    if solver == "lbfgs":
        how = (
            "L-BFGS to convergence, weight decay chosen by 3-fold cross-validation on the train "
            "split, then refit on all of it"
        )
    else:
        how = "Adam, 30+ epochs, weight decay chosen on 10% of the train split"
    return (
        f"multinomial logistic regression on standardised features ({how}); "
        "best layer chosen by the same held-out score"
    )


def _network_features(
    model: Network, train_set: ImageDataset, test_set: ImageDataset, size: int, config: Config
) -> tuple[dict, dict]:
    layers = [*model.conv_names, "neck"]
    view = {"crop": config.crop, "scale": config.crop_scale}
    return extract_features(model, train_set.images, layers, size, **view), extract_features(
        model, test_set.images, layers, size, **view
    )


def format_table(results: dict) -> str:
    """A markdown table of the demo's rows."""
    header = [
        "features",
        "linear probe top-1 (penultimate)",
        "weighted 20-NN top-1",
        "best layer (chosen on held-out train images): test top-1",
    ]
    n = results["test_images"]
    cells = []
    for name in ROWS:
        row = results[name]
        best = f"{row['best_layer']} {with_error(row['best_layer_top1'], n)}"
        linear, knn = (with_error(row[key], n) for key in ("linear_probe_top1", "knn_top1"))
        cells.append([name, linear, knn, best])
    return table(header, cells) + (
        f"\n\n(top-1 ± its binomial standard error over the {n:,} test images)"
    )


def run_demo(
    out: str | Path = "runs/demo",
    config: Config | None = None,
    supervised_epochs: int | None = None,
) -> dict:
    """Train NAT and a supervised baseline on digits, probe four kinds of features, write the
    results.

    Args:
        out: folder for results.json, results.md, loss_curve.png, neighbours.png and both runs.
        config: the NAT config (default: the ``digits`` preset).
        supervised_epochs: epochs of the supervised baseline (default: half of NAT's).
    Returns:
        The dict written to ``out/results.json``.
    """
    started = time.perf_counter()
    out = Path(out)
    config = dataclasses.replace(config or load_preset("digits"), out=str(out / "nat"))
    supervised_config = dataclasses.replace(
        config,
        objective="supervised",
        out=str(out / "supervised"),
        epochs=supervised_epochs or max(1, config.epochs // 2),
    )
    train_set, test_set = load_split(config, "train"), load_split(config, "test")
    size = config.resolve(train_set.image_size).crop_size

    nat_run = train(config, overwrite=True)
    supervised_run = train(supervised_config, overwrite=True)
    random_model = initial_model(config, train_set)

    features = {
        "nat": _network_features(nat_run.model, train_set, test_set, size, config),
        "random_init": _network_features(random_model, train_set, test_set, size, config),
        "supervised": _network_features(supervised_run.model, train_set, test_set, size, config),
        "raw_pixels": (
            {"pixels": train_set.images.flatten(1).float()},
            {"pixels": test_set.images.flatten(1).float()},
        ),
    }
    results: dict = {name: _score(*features[name], train_set, test_set) for name in ROWS}
    results["test_images"] = n = len(test_set)
    results["gap_recovered"], results["gap_note"] = gap_note(
        *((results[name]["linear_probe_top1"], n) for name in ("nat", "random_init", "supervised"))
    )
    results["setup"] = _setup(config, supervised_config, results, train_set, test_set, started)
    _figures(out, config, supervised_config, nat_run, supervised_run, features, train_set, test_set)
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(format_table(results) + "\n"))
    return results


def _setup(
    config: Config,
    supervised_config: Config,
    results: dict,
    train_set: ImageDataset,
    test_set: ImageDataset,
    started: float,
) -> dict:
    """What the demo measured, how, and how long it took."""
    return {
        "data": (
            f"{config.data}: {len(train_set)} train / {len(test_set)} test images "
            "(fixed stratified split)"
        ),
        "representation": (
            "penultimate features (global-average-pooled last conv block); "
            "per-layer probes in per_layer_top1"
        ),
        "probe": _probe_description(results["nat"]["probe_solver"]),
        "knn": "weighted k-NN, k=20, temperature 0.07, cosine",
        "nat_config": config.to_dict(),
        "supervised_epochs": supervised_config.epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _figures(
    out: Path,
    config: Config,
    supervised_config: Config,
    nat_run,
    supervised_run,
    features: dict,
    train_set: ImageDataset,
    test_set: ImageDataset,
) -> None:
    """loss_curve.png (both runs) and neighbours.png (NAT's and random init's penultimate
    features)."""
    training_curves(
        {
            "NAT (square loss)": nat_run.history,
            "supervised (cross-entropy)": supervised_run.history,
        },
        out / "loss_curve.png",
        f"{figure_title(config)}: NAT {config.epochs} epochs, "
        f"supervised {supervised_config.epochs} epochs",
    )
    panels = {
        name: (features[name][0][REPRESENTATION], features[name][1][REPRESENTATION])
        for name in ("nat", "random_init")
    }
    neighbours_figure(
        panels,
        train_set.images,
        test_set.images,
        out / "neighbours.png",
        labels=(train_set.labels, test_set.labels),
        classes=train_set.classes,
        title=f"{figure_title(config, config.epochs, REPRESENTATION)} (random_init: epoch 0)",
    )
