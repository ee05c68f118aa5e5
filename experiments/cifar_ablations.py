"""The paper's ablations and our sweeps on CIFAR-10, every row at one short budget
(docs/results.md).

    python experiments/cifar_ablations.py                # all rows, ~1 h on 2 CPU cores; resumable
    python experiments/cifar_ablations.py --rows nat,nat-discrete
    python experiments/cifar_ablations.py --quick        # smoke run on digits (a minute);
                                                         # writes RUNS/ablations-quick only

Budget of every row (the CIFAR-10 preset otherwise: 32-64-128-128 conv net, d = 128, Sobel input,
pad crops + flips, lr 0.05 cosine, batch 256, re-assignment every 3rd epoch): pre-training on a
fixed random subset of --subset train images for --epochs epochs; then linear probes on the frozen
conv2 and conv3 maps (DeepCluster pooling, weight decay chosen on held-out training data) fit on a
fixed --probe-train images of the train split and scored on the whole test split, plus weighted
20-NN on the penultimate features. The short budget ranks the options; it does not give the main
table's absolute numbers.

Each row trains into RUNS/ablations/<row> (resumed if interrupted) and caches its evaluation there,
so a killed run continues where it stopped; results go to experiments/results/cifar_ablations.json
and the "ablations" section of docs/results.md after every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import harness
from natlearn.config import Config, apply_overrides
from natlearn.evaluate import labelled_splits
from natlearn.files import atomic_write
from natlearn.markdown import hardware, table, today
from natlearn.models import initial_model
from natlearn.training.resume import latest_checkpoint
from natlearn.training.trainer import train

SUP = {"objective": "supervised"}
# row -> overrides of the shared budget; "random-init" is the untrained network of the base config.
ROWS: dict[str, dict] = {
    "nat": {},
    "random-init": {},
    "supervised": SUP,
    "nat-discrete": {"targets": "discrete"},
    "nat-reassign-every": {"reassign_every": 1},
    "nat-reassign-never": {"reassign_every": 0},
    "nat-rgb": {"input": "rgb"},
    "nat-gray": {"input": "gray"},
    "supervised-rgb": {**SUP, "input": "rgb"},
    "supervised-gray": {**SUP, "input": "gray"},
    "supervised-square": {**SUP, "loss": "square"},
    "nat-d32": {"dim": 32},
    "nat-d1024": {"dim": 1024},
    "nat-k2n-spare": {"k": "2n", "spare_targets": "batch"},
    "nat-block16": {"assign_block": 16},
    "nat-block64": {"assign_block": 64},
    "nat-seed2": {"seed": 2},
    "random-init-seed2": {"seed": 2},
    "nat-resized-crops": {"crop": "resized", "crop_scale": 0.25},
}
# table title -> (row, what differs) pairs, in reading order; the first rows of each table share the
# base config.
TABLES = {
    "1. Supervised loss: softmax vs square (paper: a small gap)": [
        ("supervised", "softmax (cross-entropy)"),
        ("supervised-square", "square loss to fixed class targets"),
    ],
    "2. Input: rgb vs gray vs sobel (paper: Sobel helps NAT, costs supervised little)": [
        ("nat", "NAT, sobel"),
        ("nat-gray", "NAT, gray"),
        ("nat-rgb", "NAT, rgb"),
        ("supervised", "supervised, sobel"),
        ("supervised-gray", "supervised, gray"),
        ("supervised-rgb", "supervised, rgb"),
    ],
    "3. Targets: sphere vs discrete (paper: discrete clearly worse)": [
        ("nat", "uniform on the sphere"),
        ("nat-discrete", "discrete (one-hot, d clusters)"),
    ],
    "Sweep: re-assignment period (paper: fixed targets ~10 points worse)": [
        ("nat-reassign-every", "every epoch"),
        ("nat", "every 3rd epoch (official)"),
        ("nat-reassign-never", "never (fixed random targets)"),
    ],
    "Sweep: output dimension d": [
        ("nat-d32", "d = 32"),
        ("nat", "d = 128"),
        ("nat-d1024", "d = 1024"),
    ],
    "Sweep: k/n > 1 with spare targets in the batch problem": [
        ("nat", "k = n (official)"),
        ("nat-k2n-spare", "k = 2n, b spare targets per batch"),
    ],
    "Sweep: assignment block size (batch 256)": [
        ("nat-block16", "blocks of 16"),
        ("nat-block64", "blocks of 64"),
        ("nat", "whole batch, 256 (official)"),
    ],
    "Augmentation strength": [
        ("nat", "pad-4 random crops + flips (paper-style)"),
        ("nat-resized-crops", "random resized crops, 25-100% of the area"),
    ],
    "Seed noise (another seed changes the init, targets, subset and batch order)": [
        ("nat", "NAT, seed 1111"),
        ("nat-seed2", "NAT, seed 2"),
        ("random-init-seed2", "random init, seed 2"),
    ],
}


def row_config(base: Config, row: str, batch_size: int) -> Config:
    overrides = dict(ROWS[row])
    if overrides.get("k") == "2n":
        overrides["k"] = 2 * base.subset
    if overrides.get("spare_targets") == "batch":
        overrides["spare_targets"] = batch_size
    return dataclasses.replace(apply_overrides(base, overrides), out=str(Path(base.out) / row))


def run_row(config: Config, row: str, probe_train, test_set) -> dict:
    """Train (or resume) one row and evaluate it; the evaluation is cached beside the run."""
    cached = Path(config.out) / "ablation_eval.json"
    if cached.exists():
        return json.loads(cached.read_text())
    started = time.perf_counter()
    if row.startswith("random-init"):
        model, history = initial_model(config, probe_train), []
    else:
        found = (
            latest_checkpoint(Path(config.out))
            if (Path(config.out) / "checkpoints").exists()
            else None
        )
        result = train(config, resume=found is not None)
        model, history = result.model, result.history
    summary = {
        "row": row,
        "overrides": ROWS[row],
        **harness.short_eval(model, probe_train, test_set),
        "train_seconds": sum(h["seconds"] for h in history),
        "seconds": time.perf_counter() - started,
        "final_epoch": history[-1] if history else None,
    }
    atomic_write(cached, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def markdown(
    results: dict[str, dict], base: Config, args: argparse.Namespace, minutes: float
) -> str:
    lines = [
        "## Ablations and sweeps at one short budget (`python experiments/cifar_ablations.py`)",
        "",
        f"{today()}, {hardware()}; CIFAR-10, the JPEG q75 copy in `../shared/data/cifar10`. Every "
        f"row: the `cifar10` preset (32-64-128-128, d = {base.dim}, {base.input} input, pad-4 "
        f"crops + flips, lr {base.lr} cosine, batch {base.batch_size}, re-assign every "
        f"{base.reassign_every}rd epoch) except the one change named, pre-trained on the same "
        f"random {args.subset:,}-image subset of the train split for {args.epochs} epochs (seed "
        f"{base.seed}); linear probes on the frozen conv2 / conv3 maps (~9k dims each) fit on a "
        f"fixed {args.probe_train:,} train images, scored on all 10,000 test images; weighted "
        "20-NN on the penultimate (neck) features. One seed per row; the last table shows how much "
        f"a seed moves a row. {minutes:.0f} minutes in all (this invocation). JSON: "
        "`experiments/results/cifar_ablations.json`.",
        "",
    ]
    header = ["row", "linear conv2", "linear conv3", "20-NN neck", "train min"]
    reference = [("random-init", "random init (no training)")] if "random-init" in results else []
    for title, rows in TABLES.items():
        cells = [_cells(label, results.get(row)) for row, label in [*rows, *reference]]
        lines += [f"### {title}", "", table(header, cells), ""]
    return "\n".join(lines)


def _cells(label: str, result: dict | None) -> list[str]:
    if result is None:
        return [label, "not run yet", "", "", ""]
    scores = (result[key] for key in ("linear_conv2", "linear_conv3", "knn20_neck"))
    return [label, *(f"{score:.4f}" for score in scores), f"{result['train_seconds'] / 60:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_cifar10_option(parser)
    parser.add_argument("--runs", default="runs", help="runs go to RUNS/ablations/<row>")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated rows to run (default: all)"
    )
    parser.add_argument("--subset", type=int, default=5000, help="pre-training images per row")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--probe-train", type=int, default=10_000, help="train images the probes are fit on"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="digits, a tiny net and 2 epochs per row; writes nothing under docs/",
    )
    args = parser.parse_args()
    rows = [row for row in args.rows.split(",") if row]
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        raise SystemExit(
            f"error: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}"
        )
    if args.quick:
        args.subset, args.epochs, args.probe_train = 600, 2, 600
        base = harness.quick_config(args.epochs, subset=args.subset)
    else:
        base = harness.cifar10_config(args.cifar10, epochs=args.epochs, subset=args.subset)
    base = dataclasses.replace(
        base, out=str(Path(args.runs) / ("ablations-quick" if args.quick else "ablations"))
    )
    train_set, test_set = labelled_splits(base)
    probe_train = harness.probe_split(train_set, args.probe_train)
    # --quick keeps its JSON beside its runs: smoke runs never touch experiments/results or docs.
    saved = harness.RESULTS / "cifar_ablations.json"
    if args.quick:
        saved = Path(base.out) / "results.json"
    results = json.loads(saved.read_text())["rows"] if saved.exists() else {}
    started = time.perf_counter()
    for row in rows:
        results[row] = run_row(row_config(base, row, base.batch_size), row, probe_train, test_set)
        print(
            f"{row}: conv2 {results[row]['linear_conv2']:.4f}, "
            f"conv3 {results[row]['linear_conv3']:.4f}",
            flush=True,
        )
        minutes = (time.perf_counter() - started) / 60
        payload = {
            "date": today(),
            "hardware": hardware(),
            "budget": vars(args),
            "base": base.to_dict(),
            "rows": results,
        }
        if args.quick:
            atomic_write(saved, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))  # noqa: B023
        else:
            harness.write_json("cifar_ablations", payload)
            harness.write_section("ablations", markdown(results, base, args, minutes))


if __name__ == "__main__":
    main()
