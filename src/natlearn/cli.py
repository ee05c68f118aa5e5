"""The ``natlearn`` command: a thin layer over the Python API.

User mistakes (NatlearnError) print one line and exit 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from natlearn import __version__
from natlearn.checkpoint import latest_checkpoint, load_checkpoint, load_model, network_from_state
from natlearn.config import Config, apply_overrides, field_help, load_preset
from natlearn.errors import NatlearnError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise NatlearnError(f"{message} (see: {self.prog} --help)")


def _config_epilog() -> str:
    defaults = Config()
    lines = ["config keys (key=value; defaults shown):"]
    for name, text in field_help().items():
        lines.append(f"  {name}={getattr(defaults, name)!s}: {text}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="natlearn", description="Noise As Targets: unsupervised CNN pre-training by predicting noise.")
    parser.add_argument("--version", action="version", version=f"natlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a network with NAT (or the supervised baseline)",
        description="natlearn train [PRESET|FILE.yaml] [key=value ...]  e.g. natlearn train digits epochs=10 out=runs/digits",
        epilog=_config_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("settings", nargs="*", help="an optional preset name or YAML file first, then key=value overrides")
    train.add_argument("--resume", action="store_true", help="continue the run in out= from its newest readable checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete an earlier run in out= and start over")
    train.add_argument("--supervised", action="store_true", help="train on labels instead (objective=supervised)")

    export = commands.add_parser("export", help="write a checkpoint's backbone as a plain PyTorch state_dict (no natlearn needed to load it)")
    export.add_argument("checkpoint", help="a .pt file from natlearn train (runs/NAME/checkpoints/epoch_NNNN.pt)")
    export.add_argument("--out", required=True, help="output file: backbone.pt (torch.save) or backbone.safetensors")

    def eval_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument("--layers", default="", help="comma-separated layers (default: every conv layer and neck)")
        command.add_argument("--knn", default="20,200", help="k values of the weighted k-NN ('' for none)")
        command.add_argument("--knn-layers", default="neck", help="layers the k-NN runs on (comma-separated)")
        command.add_argument("--probe-epochs", type=int, default=30, help="epochs of the linear and MLP probes")
        command.add_argument("--no-linear", action="store_true", help="skip the linear probes")
        command.add_argument("--no-mlp", action="store_true", help="skip the paper's fc6-8 MLP on the last conv layer")
        command.add_argument("--finetune", type=int, default=0, metavar="EPOCHS", help="also fine-tune every layer (0 = no)")

    evaluate = commands.add_parser(
        "eval",
        help="transfer of frozen features: linear probe per layer, the paper's MLP, weighted k-NN",
        description="natlearn eval CHECKPOINT|random-init|raw-pixels [PRESET] [key=value ...] --out DIR",
    )
    evaluate.add_argument("source", help="a checkpoint .pt, random-init (same network untrained) or raw-pixels")
    evaluate.add_argument("settings", nargs="*", help="random-init/raw-pixels: an optional preset first; then key=value data settings")
    evaluate.add_argument("--out", default=None, help="output folder (default: RUN/eval for a run's checkpoint, else eval)")
    eval_flags(evaluate)

    compare = commands.add_parser("compare", help="several checkpoints and baselines side by side, with the gap NAT recovers")
    compare.add_argument("sources", nargs="+", help="checkpoints, random-init, raw-pixels, then key=value data settings")
    compare.add_argument("--out", required=True, help="output folder: one eval per source plus compare.md/json")
    eval_flags(compare)

    neighbours = commands.add_parser("neighbors", help="test queries and their nearest training images in a layer's feature space")
    neighbours.add_argument("checkpoint")
    neighbours.add_argument("settings", nargs="*", help="key=value data settings")
    neighbours.add_argument("--layer", default="neck", help="feature layer (default neck: the penultimate features)")
    neighbours.add_argument("--queries", type=int, default=8)
    neighbours.add_argument("--k", type=int, default=6)
    neighbours.add_argument("--out", required=True, help="PNG file")

    filters = commands.add_parser("filters", help="the conv1 filters of a checkpoint as a PNG grid")
    filters.add_argument("checkpoint")
    filters.add_argument("--out", required=True, help="PNG file")

    evolution = commands.add_parser("evolution", help="transfer accuracy of the checkpoints kept along a run (train with keep_every=N)")
    evolution.add_argument("run_dir")
    evolution.add_argument("settings", nargs="*", help="key=value data settings")
    evolution.add_argument("--out", default=None, help="output folder (default RUN_DIR/evolution)")
    eval_flags(evolution)

    report = commands.add_parser("report", help="one markdown page of a run: config, curves, evaluations, figures")
    report.add_argument("run_dir")

    demo = commands.add_parser("demo", help="NAT vs random init vs raw pixels vs supervised on the bundled digits (~1 minute)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("settings", nargs="*", help="key=value changes to the digits preset, e.g. seed=3 epochs=100")
    return parser


def _train_config(args: argparse.Namespace) -> Config:
    settings = list(args.settings)
    preset = settings.pop(0) if settings and "=" not in settings[0] else None
    if args.supervised:
        settings.append("objective=supervised")
    if not args.resume:
        return apply_overrides(load_preset(preset) if preset else Config(), settings)
    if preset:
        raise NatlearnError(f"--resume takes the config from the checkpoint; drop {preset!r} and pass only key=value changes")
    out = Path(apply_overrides(Config(), settings).out)
    with warnings.catch_warnings():  # train() looks again and warns about damaged checkpoints once
        warnings.simplefilter("ignore")
        found = latest_checkpoint(out)
    if found is None:
        raise NatlearnError(f"nothing to resume in {out}: no readable checkpoint under {out / 'checkpoints'}; drop --resume to start a new run")
    return apply_overrides(apply_overrides(Config(), found[1]["config"]), settings)


def _eval_settings(args: argparse.Namespace, knn: bool = True):
    from natlearn.evaluate import EvalSettings

    try:
        ks = tuple(int(k) for k in args.knn.split(",") if k.strip()) if knn else ()
    except ValueError:
        raise NatlearnError(f"--knn {args.knn!r} must be comma-separated integers, e.g. 20,200") from None
    layers = [name.strip() for name in args.layers.split(",") if name.strip()] or None
    knn_layers = tuple(name.strip() for name in args.knn_layers.split(",") if name.strip())
    return EvalSettings(layers, not args.no_linear, ks, knn_layers, not args.no_mlp, probe_epochs=args.probe_epochs, finetune_epochs=args.finetune)


def _preset_and_overrides(settings: list[str]) -> tuple[Config, list[str]]:
    if settings and "=" not in settings[0]:
        return load_preset(settings[0]), settings[1:]
    return Config(), settings


def _default_eval_dir(source: str) -> Path:
    path = Path(source)
    return path.parent.parent / "eval" if path.parent.name == "checkpoints" else Path("eval")


def _data_overrides(items: list[str]) -> list[str]:
    apply_overrides(Config(), items)  # reject unknown keys before any work
    return items


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        import torch

        from natlearn.train import train

        config = _train_config(args)
        result = train(config, resume=args.resume, overwrite=args.overwrite)
        if torch.distributed.is_initialized():  # under torchrun: leave together, rank 0 reports
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            if os.environ.get("RANK") != "0":
                return 0
        last = result.history[-1] if result.history else {}
        print(f"done: {len(result.history)} epochs in {result.run_dir}; last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
        return 0
    if args.command == "demo":
        from natlearn.demo import format_table, run_demo

        results = run_demo(args.out, apply_overrides(load_preset("digits"), args.settings))
        print(format_table(results))
        print(f"NAT recovers {results['gap_recovered']:.0%} of the random-init -> supervised gap" if results["gap_recovered"] is not None else "")
        print(f"wrote {Path(args.out) / 'results.json'}, results.md, loss_curve.png, neighbours.png ({results['setup']['seconds']} s)")
        return 0
    if args.command == "eval":
        from natlearn.evaluate import evaluate, format_eval

        base, overrides = _preset_and_overrides(args.settings) if args.source in ("random-init", "raw-pixels") else (None, args.settings)
        out = Path(args.out) if args.out else _default_eval_dir(args.source)
        results = evaluate(args.source, _data_overrides(overrides), _eval_settings(args), out, base)
        print(format_eval(results))
        print(f"wrote {out / 'eval.json'} and eval.md ({results['seconds']:.0f} s)")
        return 0
    if args.command == "compare":
        from natlearn.evaluate import evaluate
        from natlearn.evaluate.compare import compare_table

        sources = [item for item in args.sources if "=" not in item]
        overrides = _data_overrides([item for item in args.sources if "=" in item])
        checkpoints = [s for s in sources if s not in ("random-init", "raw-pixels")]
        base = apply_overrides(apply_overrides(Config(), load_checkpoint(checkpoints[0])["config"]), overrides) if checkpoints else None
        settings, out = _eval_settings(args), Path(args.out)
        results = {}
        for index, source in enumerate(sources):
            name = f"{index}-{Path(source).parent.parent.name if source.endswith('.pt') else source}"
            results[name] = evaluate(source, overrides, settings, out / name, base)
        print(compare_table(results, out))
        return 0
    if args.command == "neighbors":
        from natlearn.evaluate import extract_features, labelled_splits
        from natlearn.evaluate.figures import neighbours_figure

        state = load_checkpoint(args.checkpoint)
        config = apply_overrides(apply_overrides(Config(), state["config"]), _data_overrides(args.settings))
        model, (train_set, test_set) = network_from_state(state), labelled_splits(config)
        size = config.crop_size or train_set.image_size
        panels = {args.layer: tuple(extract_features(model, data.images, [args.layer], size)[args.layer] for data in (train_set, test_set))}
        print(f"wrote {neighbours_figure(panels, train_set.images, test_set.images, Path(args.out), args.queries, args.k)}")
        return 0
    if args.command == "filters":
        from natlearn.evaluate.figures import filters_figure

        print(f"wrote {filters_figure(load_model(args.checkpoint), Path(args.out))}")
        return 0
    if args.command == "evolution":
        from natlearn.evaluate.evolution import evolution

        rows = evolution(args.run_dir, _eval_settings(args), _data_overrides(args.settings), args.out)
        print(f"evaluated epochs {[row['epoch'] for row in rows]}; wrote {Path(args.out or Path(args.run_dir) / 'evolution')}")
        return 0
    if args.command == "report":
        from natlearn.evaluate.report import write_report

        print(f"wrote {write_report(args.run_dir)}")
        return 0
    if args.command == "export":
        from natlearn.checkpoint import export_backbone

        print(f"wrote {export_backbone(args.checkpoint, args.out)}")
        return 0
    raise AssertionError(args.command)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"natlearn: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _run(argv)
    except NatlearnError as error:
        print(f"natlearn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("natlearn: interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
