"""What the experiment scripts share: where their results go, their base configs (CIFAR-10, or
digits for --quick smoke runs) and the short evaluation protocol.

A script run as ``python experiments/<name>.py`` has this folder first on ``sys.path``: the scripts
import this module, never one another.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from natlearn import markdown
from natlearn.config import Config
from natlearn.data import ImageDataset
from natlearn.evaluate import EvalSettings, evaluate_network
from natlearn.files import write_record
from natlearn.models import Network
from natlearn.presets import load_preset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"  # the offline copy beside the repository
LAYERS = ["conv2", "conv3"]  # the short protocol's conv layers


def write_json(name: str, payload: dict) -> Path:
    """``experiments/results/<name>.json``, its paths relative to the repository."""
    return write_record(RESULTS / f"{name}.json", payload, ROOT)


def write_section(name: str, body: str) -> Path:
    """Replace this script's section of docs/results.md (between its markers), or append it."""
    return markdown.write_section(ROOT / "docs" / "results.md", name, body, "# Results")


def add_cifar10_option(parser: argparse.ArgumentParser) -> None:
    about = "CIFAR-10 folder with train/ and test/ (default: ../shared/data/cifar10)"
    parser.add_argument("--cifar10", default=str(CIFAR10), help=about)


def quick_config(epochs: int, **changes: object) -> Config:
    """The base of --quick smoke runs: digits and a tiny network (a minute on a CPU)."""
    tiny = {"widths": (8, 16, 16), "dim": 16, "batch_size": 64}
    return Config(data="digits", **tiny, epochs=epochs, progress=False, **changes)


def cifar10_config(folder: str, **changes: object) -> Config:
    """The ``cifar10`` preset on ``folder`` (train/ and test/ inside); exits with one line if it is
    missing."""
    if not (Path(folder) / "train").is_dir():
        raise SystemExit(
            f"error: no CIFAR-10 folder at {folder}; pass --cifar10 DIR (train/ and test/ inside) "
            "or use --quick"
        )
    return dataclasses.replace(load_preset("cifar10"), data=folder, progress=False, **changes)


def probe_split(train_set: ImageDataset, size: int) -> ImageDataset:
    """The fixed subset of the train split the short protocol's probes are fit on."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
    return train_set.subset(order[:size].sort().values)


def short_eval(model: Network, probe_train: ImageDataset, test_set: ImageDataset) -> dict:
    """The short protocol: linear probes on conv2, conv3 and the penultimate features, 20-NN on the
    latter."""
    settings = EvalSettings(layers=[*LAYERS, "neck"], knn=(20,), mlp=False, progress=False)
    size = probe_train.image_size
    evaluation = evaluate_network(model.eval(), probe_train, test_set, size, settings)
    linear = evaluation["protocols"]["linear"]
    # Chosen on held-out train images, not the test split.
    best = max(LAYERS, key=lambda layer: linear[layer]["held_out_top1"])
    return {
        **{f"linear_{layer}": linear[layer]["top1"] for layer in [*LAYERS, "neck"]},
        **{f"held_out_{layer}": linear[layer]["held_out_top1"] for layer in [*LAYERS, "neck"]},
        "best_linear_layer": best,
        "best_linear": linear[best]["top1"],
        "knn20_neck": evaluation["protocols"]["knn20"]["neck"]["top1"],
    }
