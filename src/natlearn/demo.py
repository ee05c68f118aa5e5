"""`natlearn demo`: NAT on the bundled digits, scored against random init, raw pixels and supervised.

Every figure in the table is measured by the run: one fixed train/test split, the same network,
the same linear probe (and weighted k-NN) on frozen features for every row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from natlearn.config import Config, load_preset
from natlearn.data import ImageDataset
from natlearn.files import atomic_write
from natlearn.models import Network
from natlearn.probe import extract_features, knn_accuracy, linear_probe
from natlearn.train import build_model, train

__all__ = ["run_demo", "format_table"]

REPRESENTATION = "neck"  # the penultimate features: what NAT trains and what a user transfers


def _score(
    train_features: dict[str, torch.Tensor], test_features: dict[str, torch.Tensor], train_set: ImageDataset, test_set: ImageDataset
) -> dict:
    per_layer = {
        name: linear_probe(train_features[name], train_set.labels, test_features[name], test_set.labels).top1 for name in train_features
    }
    headline = REPRESENTATION if REPRESENTATION in per_layer else next(iter(per_layer))
    best_layer = max(per_layer, key=per_layer.get)
    return {
        "linear_probe_top1": per_layer[headline],
        "knn_top1": knn_accuracy(train_features[headline], train_set.labels, test_features[headline], test_set.labels),
        "feature_dims": int(train_features[headline].shape[1]),
        "best_layer": best_layer,
        "best_layer_top1": per_layer[best_layer],
        "per_layer_top1": per_layer,
    }


def _network_features(model: Network, train_set: ImageDataset, test_set: ImageDataset, size: int) -> tuple[dict, dict]:
    layers = [*model.conv_names, "neck"]
    return extract_features(model, train_set.images, layers, size), extract_features(model, test_set.images, layers, size)


def format_table(results: dict) -> str:
    """A markdown table of the demo's rows."""
    lines = [
        "| features | linear probe top-1 (penultimate) | weighted 20-NN top-1 | best layer (linear probe) |",
        "|---|---|---|---|",
    ]
    for name in ("nat", "random_init", "raw_pixels", "supervised"):
        row = results[name]
        best = f"{row['best_layer']} {row['best_layer_top1']:.4f}"
        lines.append(f"| {name} | {row['linear_probe_top1']:.4f} | {row['knn_top1']:.4f} | {best} |")
    return "\n".join(lines)


def _write_figures(out: Path, nat_run, supervised_run, features: dict, train_set: ImageDataset, test_set: ImageDataset) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Loss curves: NAT square loss and mean cosine to the own target, supervised loss.
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = [row["epoch"] for row in nat_run.history]
    left.plot(epochs, [row["loss"] for row in nat_run.history], label="NAT square loss")
    left.plot([row["epoch"] for row in supervised_run.history], [row["loss"] for row in supervised_run.history], label="supervised CE")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.legend()
    right.plot(epochs, [row["cosine"] for row in nat_run.history], color="C2")
    right.set_xlabel("epoch")
    right.set_ylabel("mean cosine to own target")
    fig.suptitle("NAT on digits")
    fig.tight_layout()
    _save_figure(fig, out / "loss_curve.png")

    # Nearest training images of fixed test queries, NAT vs random-init penultimate features.
    queries = torch.arange(0, len(test_set), len(test_set) // 8)[:8]
    shown = 6
    fig, axes = plt.subplots(len(queries), 2 * (shown + 1), figsize=(2 * (shown + 1) * 0.7, len(queries) * 0.75))
    for column_offset, name in ((0, "nat"), (shown + 1, "random_init")):
        train_f, test_f = (torch.nn.functional.normalize(f[REPRESENTATION], dim=1) for f in features[name])
        neighbours = (test_f[queries] @ train_f.T).topk(shown, dim=1).indices
        for row, query in enumerate(queries):
            images = [test_set.images[query]] + [train_set.images[j] for j in neighbours[row]]
            for col, image in enumerate(images):
                axis = axes[row, column_offset + col]
                axis.imshow(image[0].numpy(), cmap="gray_r")
                axis.set_xticks([])
                axis.set_yticks([])
                if col == 0:
                    axis.spines[:].set_color("red")
        axes[0, column_offset].set_title(f"{name}: query | nearest train images", loc="left", fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.02, wspace=0.1, hspace=0.1)
    _save_figure(fig, out / "neighbours.png")


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def run_demo(out: str | Path = "runs/demo", config: Config | None = None, supervised_epochs: int | None = None) -> dict:
    """Train NAT and a supervised baseline on digits, probe four kinds of features, write the results.

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
        config, objective="supervised", out=str(out / "supervised"), epochs=supervised_epochs or max(1, config.epochs // 2)
    )
    train_set, test_set = config.load_data("train"), config.load_data("test")
    size = config.crop_size or train_set.image_size

    nat_run = train(config, overwrite=True)
    supervised_run = train(supervised_config, overwrite=True)
    random_model = build_model(config, train_set)

    features = {
        "nat": _network_features(nat_run.model, train_set, test_set, size),
        "random_init": _network_features(random_model, train_set, test_set, size),
        "supervised": _network_features(supervised_run.model, train_set, test_set, size),
        "raw_pixels": ({"pixels": train_set.images.flatten(1).float()}, {"pixels": test_set.images.flatten(1).float()}),
    }
    results: dict = {name: _score(*features[name], train_set, test_set) for name in ("nat", "random_init", "raw_pixels", "supervised")}
    gap = results["supervised"]["linear_probe_top1"] - results["random_init"]["linear_probe_top1"]
    results["gap_recovered"] = (
        (results["nat"]["linear_probe_top1"] - results["random_init"]["linear_probe_top1"]) / gap if gap > 0 else None
    )
    results["setup"] = {
        "data": f"{config.data}: {len(train_set)} train / {len(test_set)} test images (fixed stratified split)",
        "representation": "penultimate features (global-average-pooled last conv block); per-layer probes in per_layer_top1",
        "probe": "multinomial logistic regression, L-BFGS, standardised features, weight decay chosen on 20% of train",
        "knn": "weighted k-NN, k=20, temperature 0.07, cosine",
        "nat_config": config.to_dict(),
        "supervised_epochs": supervised_config.epochs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_figures(out, nat_run, supervised_run, features, train_set, test_set)
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    atomic_write(out / "results.md", lambda tmp: tmp.write_text(format_table(results) + "\n"))
    return results
