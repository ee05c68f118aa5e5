"""``natlearn eval``: one source's frozen features by the probe suite."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn.choices import BASELINES
from natlearn.cli.common import (
    Command,
    data_overrides,
    eval_flags,
    eval_layers,
    eval_settings,
    presets_epilog,
    progress,
    refresh_board,
    settings_argument,
    split_preset,
)

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    usage = (
        "natlearn eval CHECKPOINT|pretrained:NAME|random-init|raw-pixels|hand-crafted [PRESET] "
        "[key=value ...] --out DIR"
    )
    add = command(
        "eval",
        "transfer of frozen features: linear probe per layer, the paper's MLP, weighted k-NN",
        run,
        description=usage,
        epilog=presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add(
        "source",
        help="a run folder or checkpoint .pt, pretrained:NAME (a backbone natlearn ships, e.g. "
        "pretrained:cifar10-small), random-init (untrained), raw-pixels or hand-crafted "
        "(Coates & Ng k-means features)",
    )
    settings_argument(
        add,
        "random-init/raw-pixels/hand-crafted: an optional preset first; then key=value data "
        "settings",
    )
    add(
        "--out",
        default=None,
        help="output folder (default: RUN/eval for a run's checkpoint, else eval)",
    )
    eval_flags(add)


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.probes.run import evaluate, format_eval
    from natlearn.evaluate.sources import run_folder, source_config

    baseline = args.source in BASELINES
    base, overrides = split_preset(args.settings) if baseline else (None, args.settings)
    settings = eval_settings(args)
    config = source_config(args.source, base, data_overrides(overrides))
    settings.progress = progress(overrides)
    if config is not None:
        eval_layers(args, config, args.source)
    out = Path(args.out) if args.out else run_folder(args.source, Path(".")) / "eval"
    results = evaluate(args.source, overrides, settings, out, base)
    print(format_eval(results))
    print(f"wrote {out / 'eval.json'} and eval.md ({results['seconds']:.0f} s)")
    refresh_board(args.source)
    print(f"next: {_after_eval(args.source, overrides)}")


def _after_eval(source: str, overrides: list[str]) -> str:
    """The natural next command after evaluating ``source``."""
    from natlearn.evaluate.sources import run_folder

    data = "".join(f" {item}" for item in overrides)
    if source in BASELINES:
        trained = "RUN/checkpoints/last.pt"
        return f"natlearn compare {trained} {source}{data} --out DIR (a trained network beside it)"
    baselines = f"{source} random-init raw-pixels{data}"
    compare = f"natlearn compare {baselines} --out DIR (the baselines beside it)"
    path = run_folder(source, Path(source))
    if (path / "checkpoints").is_dir():
        return f"natlearn report {path} (curves, filters, neighbours and this table), or {compare}"
    return compare
