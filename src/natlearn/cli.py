"""The ``natlearn`` command: a thin layer over the Python API.

User mistakes (NatlearnError) print one line and exit 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from natlearn import __version__
from natlearn.checkpoint import latest_checkpoint
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

    export = commands.add_parser(
        "export", help="write a checkpoint's backbone as a plain PyTorch state_dict (no natlearn needed to load it)"
    )
    export.add_argument("checkpoint", help="a .pt file from natlearn train (runs/NAME/checkpoints/epoch_NNNN.pt)")
    export.add_argument("--out", required=True, help="output file: backbone.pt (torch.save) or backbone.safetensors")

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
        raise NatlearnError(
            f"nothing to resume in {out}: no readable checkpoint under {out / 'checkpoints'}; drop --resume to start a new run"
        )
    return apply_overrides(apply_overrides(Config(), found[1]["config"]), settings)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        from natlearn.train import train

        config = _train_config(args)
        result = train(config, resume=args.resume, overwrite=args.overwrite)
        last = result.history[-1] if result.history else {}
        print(f"done: {len(result.history)} epochs in {result.run_dir}; last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
        return 0
    if args.command == "demo":
        from natlearn.demo import format_table, run_demo

        results = run_demo(args.out, apply_overrides(load_preset("digits"), args.settings))
        print(format_table(results))
        print(
            f"NAT recovers {results['gap_recovered']:.0%} of the random-init -> supervised gap"
            if results["gap_recovered"] is not None
            else ""
        )
        print(f"wrote {Path(args.out) / 'results.json'}, results.md, loss_curve.png, neighbours.png ({results['setup']['seconds']} s)")
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
