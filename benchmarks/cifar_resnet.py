"""NAT with torchvision's ResNet-18 on CIFAR-10 (the `cifar10_resnet18` preset), scored as lightly's
benchmarks score self-supervised methods: weighted k-NN (k = 200) and a linear probe on the pooled
512-d features, next to random init, supervised training of the same network and lightly's
published 200-epoch table (docs/results.md).

    python benchmarks/cifar_resnet.py                         # 200 epochs, every row (a GPU)
    python benchmarks/cifar_resnet.py --budget-minutes 9      # epochs fitted to the time (a GPU)
    python benchmarks/cifar_resnet.py --subset 5000 --epochs 8 --stages --rows nat,random-init
                                                              # the CPU check (probes per stage)
    python benchmarks/cifar_resnet.py --quick                 # smoke run on digits, a minute;
                                                              # writes RUNS/cifar_resnet-quick only

Rows: ``nat`` is the preset (the recipe benchmarks/resnet_recipe.py chose: an mlp head and a
SimCLR-style augmentation on Sobel input: random resized crops of 8-100% of the area, colour jitter
0.5 on 80% of the crops, grayscale on 20%, flips); ``nat-simclr`` the same on rgb input;
``nat-paper`` the paper's recipe (linear head, pad-4 random crops + flips, Sobel: the preset before
that study); ``supervised`` trains the same network on the labels (cross-entropy, the preset's
augmentation); ``random-init`` is the untrained network. Each row trains into
RUNS/cifar_resnet/<row> (resumed if interrupted) and caches its evaluation there. Probes are fit on
the train split (or a fixed --probe-train subset of it) and scored once on the test split; the
linear probe's weight decay is chosen on held-out train images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from _report import ROOT, chosen_rows, cifar10_option, hardware, today, write_json
from natlearn import markdown
from natlearn.config import Config, apply_overrides, resolve_device
from natlearn.evaluate import EvalSettings, evaluate_network, labelled_splits
from natlearn.files import atomic_write
from natlearn.models import initial_model
from natlearn.presets import load_preset
from natlearn.training.resume import latest_checkpoint
from natlearn.training.trainer import train

SIMCLR = {"crop": "resized", "crop_scale": 0.08, "color_jitter": 0.5, "grayscale": 0.2}
# The paper's recipe on ResNet-18: linear head, pad-4 crops + flips (the preset before the recipe
# study of benchmarks/resnet_recipe.py made its mlp head and SimCLR-style augmentation the preset).
PAPER = {
    "head": "linear",
    "crop": "pad",
    "crop_padding": 4,
    "crop_scale": 0.25,
    "color_jitter": 0.0,
    "grayscale": 0.0,
}
ROWS: dict[str, dict] = {
    "nat": {},
    "nat-simclr": {**SIMCLR, "input": "rgb"},
    "nat-paper": PAPER,
    "supervised": {"objective": "supervised"},
    "random-init": {},
}
LABELS = {
    "nat": "NAT, the preset: mlp head, SimCLR-style crops + jitter, Sobel",
    "nat-simclr": "NAT, the preset on rgb input",
    "nat-paper": "NAT, the paper's recipe: linear head, pad crops + flips, Sobel",
    "supervised": "supervised (labels), same network and augmentation",
    "random-init": "random init (no training)",
}
# lightly's ResNet-18 CIFAR-10 benchmark, 200 epochs, weighted k-NN (k = 200) top-1
# (docs.lightly.ai "Benchmarks"), as given in the issue that asked for this comparison.
LIGHTLY_KNN = {
    "SimCLR, batch 128": 0.847,
    "BYOL, batch 128": 0.869,
    "SwAV, batch 128": 0.812,
    "DINO, batch 128": 0.840,
    "MoCo, batch 128": 0.838,
    "SimCLR, batch 512": 0.848,
    "SwAV, batch 512": 0.842,
}
KNN = 200


def row_config(base: Config, row: str, runs: Path) -> Config:
    return dataclasses.replace(apply_overrides(base, ROWS[row]), out=str(runs / row))


def train_row(config: Config) -> tuple[torch.nn.Module, list[dict]]:
    """Train (or resume) a row's run."""
    folder = Path(config.out)
    found = latest_checkpoint(folder) if (folder / "checkpoints").exists() else None
    result = train(config, resume=found is not None)
    return result.model, result.history


def run_row(config: Config, row: str, probe_train, test_set, stages: bool) -> dict:
    """Train and evaluate one row; the evaluation is cached beside its run."""
    cached = Path(config.out) / "cifar_resnet_eval.json"
    if cached.exists():
        return json.loads(cached.read_text())
    if row == "random-init":
        torch.manual_seed(config.seed)
        model, history = initial_model(config, probe_train), []
    else:
        model, history = train_row(config)
    model = model.to(resolve_device(config.device)).eval()
    layers = [*model.conv_names, "neck"] if stages else ["neck"]
    settings = EvalSettings(layers=layers, knn=(KNN,), mlp=False, progress=False)
    started = time.perf_counter()
    crop_size = config.resolve(probe_train.image_size).crop_size
    evaluation = evaluate_network(
        model, probe_train, test_set, crop_size, settings.matching(config)
    )
    linear = evaluation["protocols"]["linear"]
    # The best stage is chosen on held-out train images, never on the test split.
    best = max(layers, key=lambda layer: linear[layer]["held_out_top1"])
    train_seconds = sum(h["seconds"] for h in history)
    summary = {
        "row": row,
        "overrides": ROWS[row],
        "epochs": len(history),
        "train_seconds": train_seconds,
        "train_images_per_second": history[-1]["images_per_s"] if history else None,
        "eval_seconds": time.perf_counter() - started,
        f"knn{KNN}_neck": evaluation["protocols"][f"knn{KNN}"]["neck"]["top1"],
        "linear": {layer: linear[layer]["top1"] for layer in layers},
        "held_out": {layer: linear[layer]["held_out_top1"] for layer in layers},
        "best_layer": best,
        "best_linear": linear[best]["top1"],
        "final_epoch": history[-1] if history else None,
    }
    atomic_write(cached, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def epochs_for_budget(base: Config, rows: list[str], minutes: float, runs: Path) -> int:
    """Epochs per trained row that fit ``minutes`` of training in all: one epoch of the first row
    is timed in a scratch run (its first epoch includes start-up, so the estimate is cautious)."""
    trained = [row for row in rows if row != "random-init"]
    probe = dataclasses.replace(
        row_config(base, trained[0], runs / "timing"), epochs=1, keep_last=1
    )
    seconds = train(probe, overwrite=True).history[0]["seconds"]
    epochs = int(minutes * 60 / len(trained) / seconds)
    print(f"one epoch of {trained[0]}: {seconds:.1f} s -> {epochs} epochs per row", flush=True)
    if epochs < 1:
        raise SystemExit(f"error: {minutes} minutes do not fit one epoch of {len(trained)} rows")
    return min(epochs, base.epochs)


def report(results: dict[str, dict], base: Config, args: argparse.Namespace, data: str) -> str:
    stages = sorted({layer for r in results.values() for layer in r["linear"]} - {"neck"})
    header = ["row", "epochs", f"{KNN}-NN neck", "linear neck", *[f"linear {s}" for s in stages]]
    header += ["best stage (held out)", "train min", "img/s"]
    cells = []
    for row in ROWS:
        result = results.get(row)
        if result is None:
            continue
        per_stage = [f"{result['linear'][s]:.4f}" if s in result["linear"] else "" for s in stages]
        speed = result["train_images_per_second"]
        cells.append(
            [
                LABELS[row],
                str(result["epochs"]),
                f"{result[f'knn{KNN}_neck']:.4f}",
                f"{result['linear']['neck']:.4f}",
                *per_stage,
                f"{result['best_layer']} {result['best_linear']:.4f}",
                f"{result['train_seconds'] / 60:.1f}",
                f"{speed:.0f}" if speed else "",
            ]
        )
    for method, score in LIGHTLY_KNN.items():
        cells.append(
            [f"lightly, published: {method}", "200", f"{score:.3f}"] + [""] * (len(header) - 3)
        )
    command = " ".join(["python benchmarks/cifar_resnet.py", *args.argv])
    pretrained_on = f"a random {args.subset:,}-image subset" if args.subset else "the train split"
    caveat = f"; **{args.epochs} epochs are not comparable to them**" if args.epochs < 200 else ""
    return "\n".join(
        [
            f"## ResNet-18 on CIFAR-10 (`{command}`)",
            "",
            f"{today()}, {hardware()}, {resolve_device(base.device)}; {data}. ResNet-18 (CIFAR "
            f"stem), the `cifar10_resnet18` preset: {base.head} head, {base.crop} crops, "
            f"colour jitter {base.color_jitter}, d = {base.dim}, batch {base.batch_size}, "
            f"lr {base.lr} cosine, weight decay {base.weight_decay}, re-assignment every "
            f"{base.reassign_every}rd epoch; {args.epochs} epochs per row on {pretrained_on} "
            f"(seed {base.seed}). Probes: weighted {KNN}-NN (cosine, temperature 0.07; lightly "
            "uses 0.1) and a linear probe (weight decay chosen on held-out train images) on the "
            f"globally pooled 512-d features, fit on {args.probe_fit:,} train images, scored once "
            f"on {args.test_size:,} test images; stages pooled to ~9k dims. lightly's rows are its "
            f"published 200-epoch numbers on the official CIFAR-10 files, not measured here{caveat}"
            f". JSON: `benchmarks/results/{args.name}.json`.",
            "",
            markdown.table(header, cells),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cifar10_option(parser)
    parser.add_argument("--runs", default="runs", help="runs go to RUNS/cifar_resnet/<row>")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per trained row")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=0,
        help="fit the epochs to this much training time in all (timed on one epoch first)",
    )
    parser.add_argument("--subset", type=int, default=0, help="pre-train on this many images")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="instead of the preset's 256 (more steps)"
    )
    parser.add_argument(
        "--probe-train", type=int, default=0, help="fit probes on this many train images (0: all)"
    )
    parser.add_argument(
        "--stages", action="store_true", help="linear probes on every stage too (conv1..layer4)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="digits, 1 epoch, 256 images; writes RUNS only"
    )
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    rows = chosen_rows(args.rows, ROWS)
    preset = load_preset("cifar10_resnet18")
    if args.quick:
        args.epochs, args.subset, args.probe_train = 1, 256, 512
        base = dataclasses.replace(preset, data="digits", batch_size=64, dim=16)
        data, name = "digits (smoke run)", "cifar_resnet-quick"
    else:
        if args.cifar10 == "download":  # torchvision's CIFAR-10 in ./data (needs internet)
            base = dataclasses.replace(preset, data="cifar10", download=True)
        elif (Path(args.cifar10) / "train").is_dir():
            base = dataclasses.replace(preset, data=args.cifar10)
        else:
            raise SystemExit(
                f"error: no CIFAR-10 folder at {args.cifar10}; pass --cifar10 DIR (train/ and "
                "test/ inside), --cifar10 download (torchvision, needs internet) or --quick"
            )
        on_gpu = resolve_device(args.device).type == "cuda"
        data, name = "CIFAR-10 (JPEG q75 copy)", f"cifar_resnet_{'gpu' if on_gpu else 'cpu'}"
    if args.batch_size:
        name += f"_batch{args.batch_size}"
        base = dataclasses.replace(base, batch_size=args.batch_size)
    runs, args.name = Path(args.runs) / name, name
    base = dataclasses.replace(
        base, epochs=args.epochs, subset=args.subset, device=args.device, progress=False
    )
    if args.budget_minutes:
        args.epochs = epochs_for_budget(base, rows, args.budget_minutes, runs)
        base = dataclasses.replace(base, epochs=args.epochs)
    train_set, test_set = labelled_splits(base)
    probe_train = train_set
    if args.probe_train and args.probe_train < len(train_set):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))
        probe_train = train_set.subset(order[: args.probe_train].sort().values)
    args.probe_fit, args.test_size = len(probe_train), len(test_set)
    saved = runs / "results.json"
    results = json.loads(saved.read_text())["rows"] if saved.exists() else {}
    for row in rows:
        results[row] = run_row(row_config(base, row, runs), row, probe_train, test_set, args.stages)
        print(
            f"{row}: {KNN}-NN {results[row][f'knn{KNN}_neck']:.4f}, "
            f"linear neck {results[row]['linear']['neck']:.4f}",
            flush=True,
        )
        payload = {
            "date": today(),
            "hardware": hardware(),
            "budget": {k: v for k, v in vars(args).items() if k not in ("argv", "name")},
            "base": base.to_dict(),
            "rows": results,
        }
        atomic_write(saved, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))  # noqa: B023
        if not args.quick:
            write_json(name, payload)
            body = report(results, base, args, data)
            markdown.write_section(ROOT / "docs" / "results.md", name, body, "# Results")
    print(report(results, base, args, data) if args.quick else f"results: {saved}")


if __name__ == "__main__":
    main()
