"""Which NAT recipe makes ResNet-18 (CIFAR stem) learn on CIFAR-10 on a CPU budget (issue 23): every
row is the `cifar10_resnet18` preset with one lever changed, trained for the same steps on a seeded
subset of the train split.

    python benchmarks/resnet_recipe.py --stage screen --rows preset,mlp,lr0.5,random-init
        # ~2,000 images, a few hundred steps a row; scored on held-out TRAIN images only
    python benchmarks/resnet_recipe.py --stage full --rows preset,mlp,random-init --seeds 1111,1112
        # 10,000 images, the same budget for every row; the test split scored once per row
    python benchmarks/resnet_recipe.py --quick   # digits, tiny: a smoke run, writes RUNS only

Both stages score the pooled 512-d features (``neck``) by weighted 200-NN and a linear probe, and
each stage's pooled map by a linear probe (``--stages``); probes are fit on the pre-training images.
The screen scores them on train images the run never saw (held out: the choice of recipe is made on
them, never on the test split); a full row is scored on those held-out train images and, once, on
the test split (the table). Each row also keeps its per-epoch log: the mean cosine to the own
target, the norm of the head's output before normalisation and the gradient norm per stage.

Each (row, seed) trains into RUNS/resnet_recipe/<stage>/<row>-s<seed> (resumed if interrupted) and
caches its evaluation there; benchmarks/results/resnet_recipe.json and docs/results.md are rewritten
after every row, so an interrupted study keeps what finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from _report import ROOT, chosen_rows, cifar10_option, hardware, today, write_json
from cifar_resnet import PAPER, SIMCLR, train_row
from natlearn import markdown
from natlearn.config import Config, apply_overrides
from natlearn.data import subset_indices
from natlearn.evaluate import EvalSettings, evaluate_network, labelled_splits
from natlearn.files import atomic_write
from natlearn.models import initial_model
from natlearn.presets import load_preset

# What every row starts from: the cifar10_resnet18 preset as the study screened it, the paper's
# recipe (linear head, pad-4 crops + flips), before the study made its winner (mlp-simclr-sobel) the
# preset.
BASE = PAPER
# name: (overrides of BASE, what the row tests)
ROWS: dict[str, tuple[dict, str]] = {
    "preset": (
        {},
        "the screened base (the preset before this study): linear head, lr 0.05 (mean loss, "
        "momentum 0.9), d 128, re-assignment every 3rd epoch, pad-4 crops + flips, Sobel",
    ),
    "mlp": ({"head": "mlp"}, "mlp head (fc-BN-ReLU x2, 2048 wide, then d), probed below it"),
    "lr0.5": ({"lr": 0.5}, "lr 0.5 (10x)"),
    "lr0.15": ({"lr": 0.15}, "lr 0.15 (3x)"),
    "lr0.015": ({"lr": 0.015}, "lr 0.015 (0.3x)"),
    "official-sum": (
        {"loss_reduction": "sum", "lr": 0.01, "momentum": 0.0},
        "the official optimisation: loss summed over the batch, lr 0.01, no momentum",
    ),
    "d512": ({"dim": 512}, "d 512"),
    "reassign1": ({"reassign_every": 1}, "re-assignment every epoch"),
    "simclr-rgb": ({**SIMCLR, "input": "rgb"}, "SimCLR-style augmentation, rgb input"),
    "simclr-sobel": (SIMCLR, "SimCLR-style crops + jitter, Sobel input"),
    "mlp-simclr-sobel": ({"head": "mlp", **SIMCLR}, "mlp head + SimCLR-style, Sobel"),
    "mlp-simclr-rgb": ({"head": "mlp", **SIMCLR, "input": "rgb"}, "mlp head + SimCLR-style, rgb"),
    "mlp-lr0.5": ({"head": "mlp", "lr": 0.5}, "mlp head + lr 0.5"),
    "softmax": ({"loss": "softmax"}, "softmax loss over the batch's targets (temperature 0.1)"),
    "small-net": (
        {"arch": "small"},
        "the cifar10 preset's small conv net at the same settings (the reference that learns)",
    ),
    "small-net-random-init": ({"arch": "small"}, "the small conv net at random init"),
    "random-init": ({}, "random init (no training)"),
    "supervised": ({"objective": "supervised"}, "supervised (labels), same network and crops"),
}
# stage: pre-training images, batch, epochs (the same steps for every row of a stage), held-out
# train images scored. The screen is sized for 2 shared CPU cores, where ResNet-18 trains at 17-70
# img/s: 8 epochs of 32 steps of 64 images, ~15 min a row.
STAGES = {
    "screen": {"subset": 2000, "batch_size": 64, "epochs": 8, "held_out": 1000},
    "full": {"subset": 10000, "batch_size": 256, "epochs": 10, "held_out": 2000},
    "quick": {"subset": 256, "batch_size": 64, "epochs": 2, "held_out": 128},
}
KNN = 200
PER_EPOCH = ("cosine", "h_norm", "loss", "reassigned", "seconds")  # kept from each log row


def row_config(base: Config, row: str, seed: int, runs: Path) -> Config:
    config = apply_overrides(base, ROWS[row][0])
    return dataclasses.replace(config, seed=seed, out=str(runs / f"{row}-s{seed}"))


def held_out_indices(config: Config, images: int, count: int) -> torch.Tensor:
    """``count`` train images outside the run's pre-training subset (fixed per subset)."""
    outside = torch.ones(images, dtype=torch.bool)
    outside[subset_indices(config, images)] = False
    candidates = outside.nonzero().flatten()
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(0))
    return candidates[order[:count]].sort().values


def _scores(model, fit, scored, config: Config, layers: list[str]) -> dict:
    settings = EvalSettings(layers=layers, knn=(KNN,), mlp=False, progress=False)
    crop_size = config.resolve(fit.image_size).crop_size
    result = evaluate_network(model, fit, scored, crop_size, settings.matching(config))["protocols"]
    return {
        f"knn{KNN}": result[f"knn{KNN}"]["neck"]["top1"],
        "linear": result["linear"]["neck"]["top1"],
        "linear_stages": {layer: result["linear"][layer]["top1"] for layer in layers},
    }


def run_row(
    config: Config, row: str, train_set, test_set, stage: dict, stages: bool, command: str
) -> dict:
    """Train (or resume) and score one (row, seed); the entry, with the ``command`` that made it,
    is cached beside its run."""
    cached = Path(config.out) / "recipe_eval.json"
    if cached.exists():
        return json.loads(cached.read_text())
    started = time.perf_counter()
    if row.endswith("random-init"):
        model, history = initial_model(config, train_set), []
    else:
        model, history = train_row(config)
    model = model.eval()
    fit = train_set.subset(subset_indices(config, len(train_set)))
    held_out = train_set.subset(held_out_indices(config, len(train_set), stage["held_out"]))
    layers = [*model.conv_names, "neck"] if stages else ["neck"]
    entry = {
        "name": row,
        "seed": config.seed,
        "command": command,
        "overrides": ROWS[row][0],
        "epochs": len(history),
        "steps": len(history) * -(-stage["subset"] // stage["batch_size"]),
        "minutes": sum(h["seconds"] for h in history) / 60,
        "held_out": _scores(model, fit, held_out, config, layers),
        "history": [
            {"epoch": h["epoch"], **{k: h[k] for k in h if k in PER_EPOCH or k.startswith("grad_")}}
            for h in history
        ],
    }
    if test_set is not None:  # full rows: the test split, scored once
        entry.update(_scores(model, fit, test_set, config, layers))
    entry["eval_minutes"] = (time.perf_counter() - started) / 60 - entry["minutes"]
    atomic_write(cached, lambda tmp: tmp.write_text(json.dumps(entry, indent=2) + "\n"))
    return entry


def _cosine(entry: dict) -> str:
    """Mean cosine to the own target over the epochs without re-assignment (the objective itself,
    not the re-assignment's gain; every epoch when each re-assigns): first -> last; empty for rows
    without targets."""
    history = [h for h in entry["history"] if "cosine" in h]
    settled = [h for h in history if h.get("reassigned", 0) == 0] or history
    return f"{settled[0]['cosine']:.3f} -> {settled[-1]['cosine']:.3f}" if settled else ""


def report(entries: list[dict], stage_name: str, stage: dict) -> str:
    """The markdown table of one stage's entries, with the commands that produced them."""
    order = {name: i for i, name in enumerate(ROWS)}  # rows this version does not know go last
    entries = sorted(entries, key=lambda e: (order.get(e["name"], len(order)), e["seed"]))
    full = stage_name == "full"
    stages = sorted({s for e in entries for s in e["held_out"]["linear_stages"]} - {"neck"})
    header = ["row", "seed", "epochs", "steps", f"{KNN}-NN held-out", "linear held-out"]
    if full:
        header += [f"{KNN}-NN test", "linear test"]
    header += [f"linear {s}" for s in stages]
    header += ["cosine to own target", "mean norm of h, last epoch", "train min"]
    cells = []
    for e in entries:
        scores = e if full else e["held_out"]
        row = [ROWS[e["name"]][1] if e["name"] in ROWS else e["name"], e["seed"], e["epochs"]]
        row.append(e["steps"])
        row += [f"{e['held_out'][f'knn{KNN}']:.4f}", f"{e['held_out']['linear']:.4f}"]
        if full:
            row += [f"{e[f'knn{KNN}']:.4f}", f"{e['linear']:.4f}"]
        row += [
            f"{scores['linear_stages'][s]:.4f}" if s in scores["linear_stages"] else ""
            for s in stages
        ]
        last = e["history"][-1] if e["history"] else {}
        row += [_cosine(e), f"{last['h_norm']:.2f}" if "h_norm" in last else ""]
        row.append(f"{e['minutes']:.1f}")
        cells.append(row)
    scored = (
        f"probes fit on the {stage['subset']:,} pre-training images and scored on "
        f"{stage['held_out']:,} train images the runs never saw"
    )
    scored += (
        " (the choice) and once on the test split (the table; linear per stage: test)"
        if full
        else ""
    )
    commands = sorted({e["command"] for e in entries if "command" in e})
    return "\n".join(
        [
            f"### {stage_name}",
            "",
            f"{today()}, {hardware()}. ResNet-18 (CIFAR stem), the `cifar10_resnet18` preset with "
            f"one lever per row; {stage['subset']:,} CIFAR-10 train images, batch "
            f"{stage['batch_size']}, {stage['epochs']} epochs (cosine lr); {scored}. Cosine to "
            "own target: the first epoch -> the last epoch without re-assignment. JSON: "
            "`benchmarks/results/resnet_recipe.json`.",
            "",
            markdown.table(header, cells),
            "",
            "Commands: " + "; ".join(f"`{command}`" for command in commands),
            "",
            diagnostics(entries),
        ]
    )


def _merged(on_disk: dict, ours: dict) -> dict:
    """``ours`` plus the (row, seed) entries only ``on_disk`` has (written by another process)."""
    for stage, entries in on_disk.get("stages", {}).items():
        mine = ours["stages"].setdefault(stage, [])
        known = {(e["name"], e["seed"]) for e in mine}
        mine += [e for e in entries if (e["name"], e["seed"]) not in known]
    for stage, settings in on_disk.get("settings", {}).items():
        ours.setdefault("settings", {}).setdefault(stage, settings)
    return ours


def diagnostics(entries: list[dict]) -> str:
    """Per epoch, how each stage learns: the mean cosine to the own target, the mean norm of the
    head's output before normalisation, and each stage's gradient norm (mean over the steps)."""
    shown = [e for e in entries if e["name"] in ("small-net", "preset", "mlp") and e["history"]]
    if not shown:
        return ""
    grads = sorted(
        {k for e in shown for h in e["history"] for k in h if k.startswith("grad_")},
        key=lambda k: (k == "grad_neck", k == "grad_head", k),  # trunk stages, neck, head
    )
    header = ["row", "epoch", "re-assigned", "cosine", "norm of h", *grads]
    cells = [
        [e["name"], h["epoch"], f"{h.get('reassigned', 0):.2f}", f"{h['cosine']:.3f}"]
        + [f"{h['h_norm']:.2f}"]
        + [f"{h[g]:.3f}" if g in h else "" for g in grads]
        for e in shown
        for h in e["history"]
    ]
    return markdown.table(header, cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cifar10_option(parser)
    parser.add_argument("--stage", choices=("screen", "full"), default="screen")
    parser.add_argument("--rows", default="preset,mlp,random-init", help="comma-separated rows")
    parser.add_argument("--seeds", default="1111", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=0, help="instead of the stage's epochs")
    parser.add_argument("--stages", action="store_true", help="linear probes per stage too")
    parser.add_argument("--runs", default="runs", help="runs go to RUNS/resnet_recipe/<stage>/")
    parser.add_argument("--quick", action="store_true", help="digits, tiny; writes RUNS only")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    rows = chosen_rows(args.rows, ROWS)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    # Paths relative to the repository: the JSON and docs name no machine's folders.
    shown = [os.path.relpath(arg, ROOT) if os.path.isabs(arg) else arg for arg in args.argv]
    command = " ".join(["python benchmarks/resnet_recipe.py", *shown])
    stage_name = "quick" if args.quick else args.stage
    stage = dict(STAGES[stage_name])
    stage["epochs"] = args.epochs or stage["epochs"]
    preset = apply_overrides(load_preset("cifar10_resnet18"), BASE)
    if args.quick:
        base = dataclasses.replace(preset, data="digits", dim=16, head_widths=(64, 64))
    elif (Path(args.cifar10) / "train").is_dir():
        base = dataclasses.replace(preset, data=args.cifar10)
    else:
        raise SystemExit(
            f"error: no CIFAR-10 folder at {args.cifar10}; pass --cifar10 DIR (train/ and test/ "
            "inside) or --quick"
        )
    settings = {key: stage[key] for key in ("subset", "batch_size", "epochs")}
    base = dataclasses.replace(base, **settings, progress=False, keep_last=1)
    train_set, test_set = labelled_splits(base)
    runs = Path(args.runs) / "resnet_recipe" / stage_name
    saved = ROOT / "benchmarks" / "results" / "resnet_recipe.json"
    results = json.loads(saved.read_text()) if saved.exists() and not args.quick else {}
    stage_results = results.setdefault("stages", {}).setdefault(stage_name, [])
    for row in rows:
        for seed in seeds:
            config = row_config(base, row, seed, runs)
            scored = test_set if stage_name == "full" else None
            entry = run_row(config, row, train_set, scored, stage, args.stages, command)
            entry.setdefault("command", command)  # entries cached before commands were kept
            stage_results[:] = [
                e for e in stage_results if (e["name"], e["seed"]) != (row, seed)
            ] + [entry]
            print(
                f"{row} seed {seed}: {KNN}-NN held-out {entry['held_out'][f'knn{KNN}']:.4f}, "
                f"linear held-out {entry['held_out']['linear']:.4f}, cosine {_cosine(entry)}, "
                f"{entry['minutes']:.1f} min",
                flush=True,
            )
            if args.quick:
                continue
            if saved.exists():  # rows another process wrote since: kept
                results = _merged(json.loads(saved.read_text()), results)
            data = os.path.relpath(Path(args.cifar10).resolve(), ROOT)  # never an absolute path
            results.update(date=today(), hardware=hardware(), data=data, preset="cifar10_resnet18")
            results.setdefault("settings", {})[stage_name] = stage
            results["rows"] = results["stages"].get("full", [])
            write_json("resnet_recipe", results)
            body = "\n".join(
                report(entries, name, results["settings"][name])
                for name, entries in results["stages"].items()
                if entries
            )
            markdown.write_section(
                ROOT / "docs" / "results.md",
                "resnet_recipe",
                "## NAT recipes for ResNet-18 on CIFAR-10 (issue 23)\n\n" + body,
                "# Results",
            )
    if args.quick:
        print(report(stage_results, stage_name, stage))
        atomic_write(
            runs / "results.json",
            lambda tmp: tmp.write_text(json.dumps({"rows": stage_results}, indent=2) + "\n"),
        )


if __name__ == "__main__":
    main()
