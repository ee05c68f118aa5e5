"""The ``natlearn`` command: a thin layer over the Python API, one small handler per sub-command
(:mod:`natlearn.commands`, imported only when a command runs).

User mistakes (NatlearnError) print one line and exit 2; anything else is a bug and shows a
traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence

from natlearn.errors import NatlearnError
from natlearn.version import __version__

# Nothing here imports torch: the handlers (natlearn.commands, which does) are imported when a
# command runs, so ``natlearn --help`` and ``natlearn train --help`` answer at once.

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise NatlearnError(f"{message} (see: {self.prog} --help)")


class _CommandParser(_Parser):
    """A subcommand's parser: flags and positionals (key=value settings) may interleave, as in
    ``natlearn train epochs=8 --resume progress=false``."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _wrapped(head: str, text: str) -> list[str]:
    """``head: text``, continuation lines indented under it (the epilogs are not re-wrapped)."""
    return textwrap.wrap(
        f"{head}: {text}",
        width=100,
        initial_indent="  ",
        subsequent_indent="      ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _presets_epilog() -> str:
    from natlearn.presets import preset_descriptions

    lines = ["presets (their settings: natlearn/configs/NAME.yaml; or give your own YAML file):"]
    for name, text in preset_descriptions().items():
        lines += _wrapped(name, text)
    return "\n".join(lines)


def _config_epilog() -> str:
    """Every Config field with its default and its docstring (undocumented: name=default only)."""
    import dataclasses

    from natlearn.config import Config
    from natlearn.presets import field_help

    defaults, docs = Config(), field_help()
    lines = ["config keys (key=value; defaults shown):"]
    for field in dataclasses.fields(Config):
        value = f"{field.name}={getattr(defaults, field.name)!s}"
        lines.append(f"  {value}: {docs[field.name]}" if field.name in docs else f"  {value}")
    return "\n".join(lines)


def _handler(name: str) -> Callable[[argparse.Namespace], None]:
    """The handler ``natlearn.commands.<name>``, imported when the command runs."""

    def run(args: argparse.Namespace) -> None:
        from natlearn import commands

        getattr(commands, name)(args)

    run.__name__ = run.__qualname__ = name
    return run


def _eval_flags(add: Callable[..., argparse.Action]) -> None:
    """The options of the commands that evaluate (``add``: their parser's add_argument)."""
    add("--layers", default="", help="comma-separated layers (default: every conv layer and neck)")
    add("--knn", default="20,200", help="k values of the weighted k-NN ('' for none)")
    add("--knn-layers", default="neck", help="layers the k-NN runs on (comma-separated)")
    add("--probe-epochs", type=int, default=30, help="epochs of the linear and MLP probes")
    add("--no-linear", action="store_true", help="skip the linear probes")
    add("--no-mlp", action="store_true", help="skip the paper's fc6-8 MLP on the last conv layer")
    add(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also fine-tune every layer (0 = no)",
    )


def _settings(add: Callable[..., argparse.Action], help: str) -> None:
    """The key=value settings (``args.settings``), any number of them."""
    add("settings", nargs="*", default=[], help=help)


def _parser() -> argparse.ArgumentParser:
    """Every sub-command, each with the handler that runs it as ``args.handler``."""
    description = "Noise As Targets: unsupervised CNN pre-training by predicting noise."
    parser = _Parser(prog="natlearn", description=description)
    parser.add_argument("--version", action="version", version=f"natlearn {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    def command(name: str, summary: str, **kwargs):
        """A new sub-command (run by ``natlearn.commands.<name>_command``); its add_argument."""
        sub = subparsers.add_parser(name, help=summary, **kwargs)
        sub.set_defaults(handler=_handler(f"{name}_command"))
        return sub.add_argument

    add = command(
        "train",
        "train a network with NAT (or the supervised baseline)",
        description="natlearn train [PRESET|FILE.yaml] [key=value ...]  "
        "e.g. natlearn train digits epochs=10 out=runs/digits",
        epilog=f"{_presets_epilog()}\n\n{_config_epilog()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _settings(add, "an optional preset name or YAML file first, then key=value overrides")
    add(
        "--resume",
        action="store_true",
        help="continue the run in out= from its newest readable checkpoint",
    )
    add("--overwrite", action="store_true", help="delete an earlier run in out= and start over")
    add("--supervised", action="store_true", help="train on labels instead (objective=supervised)")

    add = command(
        "export",
        "a checkpoint's backbone as a state_dict (a .safetensors file rebuilds it alone)",
    )
    add("checkpoint", help="a run folder (its newest checkpoint) or a .pt file from natlearn train")
    add(
        "--out",
        required=True,
        help="output file: backbone.pt (torch.save) or backbone.safetensors; "
        "a folder for --format hf",
    )
    add(
        "--format",
        choices=("natlearn", "torchvision", "hf"),
        default="natlearn",
        help="natlearn: natlearn's module keys; torchvision: a ResNet's torchvision.models keys; "
        "hf: a Hugging Face Hub folder (model.safetensors + config.json) for natlearn.Backbone",
    )

    usage = (
        "natlearn eval CHECKPOINT|random-init|raw-pixels|hand-crafted [PRESET] [key=value ...] "
        "--out DIR"
    )
    add = command(
        "eval",
        "transfer of frozen features: linear probe per layer, the paper's MLP, weighted k-NN",
        description=usage,
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add(
        "source",
        help="a run folder or checkpoint .pt, random-init (untrained), raw-pixels or hand-crafted "
        "(Coates & Ng k-means features)",
    )
    _settings(
        add,
        "random-init/raw-pixels/hand-crafted: an optional preset first; then key=value data "
        "settings",
    )
    add(
        "--out",
        default=None,
        help="output folder (default: RUN/eval for a run's checkpoint, else eval)",
    )
    _eval_flags(add)

    add = command(
        "compare", "several checkpoints and baselines side by side, with the gap NAT recovers"
    )
    add(
        "sources",
        nargs="+",
        help="checkpoints, random-init, raw-pixels, hand-crafted, then key=value data settings",
    )
    add("--out", required=True, help="output folder: one eval per source plus compare.md/json")
    _eval_flags(add)

    add = command(
        "neighbors", "test queries and their nearest training images in a layer's feature space"
    )
    add("checkpoint")
    _settings(add, "key=value data settings")
    add("--layer", default="neck", help="feature layer (default neck: the penultimate features)")
    add("--queries", type=int, default=8)
    add("--k", type=int, default=6)
    add("--out", required=True, help="PNG file")

    add = command(
        "embed",
        "a layer's features of every image of a folder or data set, as .npy plus a .csv index",
        description="natlearn embed CHECKPOINT|RUN data=FOLDER [key=value ...] --out feats.npy",
    )
    add("checkpoint", help="a run folder (its newest checkpoint) or a checkpoint .pt file")
    _settings(add, "key=value data settings, e.g. data=path/to/images (default: the run's data)")
    add("--layer", default="neck", help="feature layer (default neck; conv layers are pooled)")
    add(
        "--split",
        default="all",
        help="all (default: every image once), train, test, or a data set's own split",
    )
    add("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add("--out", required=True, help="features file (.npy); the index goes beside it as .csv")

    add = command("filters", "the conv1 filters of a checkpoint as a PNG grid")
    add("checkpoint")
    add("--out", required=True, help="PNG file")

    add = command(
        "evolution",
        "transfer accuracy of the checkpoints kept along a run (train with keep_every=N)",
    )
    add("run_dir")
    _settings(add, "key=value data settings")
    add("--out", default=None, help="output folder (default RUN_DIR/evolution)")
    _eval_flags(add)

    add = command(
        "transfer",
        "Pascal VOC 2007 transfer: classification mAP (linear, fine-tuned), Faster R-CNN detection",
        description="natlearn transfer voc07 SOURCE [SOURCE ...] data_root=DIR [download=true] "
        "[image_size=N] [key=value ...] --task classify --out DIR",
    )
    add("benchmark", choices=("voc07",), help="voc07: Pascal VOC 2007 (choices on val, test once)")
    add(
        "items",
        nargs="+",
        metavar="SOURCE|key=value",
        help="run folders, checkpoint .pt files or random-init (built as the first checkpoint, "
        "else from arch= etc.), then data_root= (the folder holding VOCdevkit/), download=true, "
        "image_size= (default 224 for alexnet/resnets, else the training crop size) and config "
        "settings (e.g. progress=false, device=cpu)",
    )
    add("--task", choices=("classify", "detect", "both"), default="classify")
    add("--out", required=True, help="output folder: transfer.json and transfer.md")
    add("--layers", default="neck", help="layers of the linear probe (default neck)")
    add("--no-linear", action="store_true", help="skip the linear probe")
    add(
        "--finetune",
        type=int,
        default=20,
        metavar="EPOCHS",
        help="epochs of full fine-tuning (default 20; 0 = none)",
    )
    add(
        "--finetune-lr",
        default="0.01",
        help="fine-tuning learning rate; several (comma-separated): chosen on val",
    )
    add("--detect-size", type=int, default=600, help="detection: images' short side (default 600)")
    add("--detect-epochs", type=int, default=10, help="detection: fine-tuning epochs (default 10)")
    add("--detect-batch-size", type=int, default=4, help="detection: images per step (default 4)")
    add(
        "--detect-lr",
        default="0.01",
        help="detection learning rate; several (comma-separated): chosen on val mAP",
    )
    add(
        "--detect-layer",
        default="",
        help="detection: the trunk block whose map Faster R-CNN uses (default the last conv block)",
    )

    add = command("report", "one markdown page of a run: config, curves, evaluations, figures")
    add("run_dir")

    add = command(
        "demo", "NAT vs random init vs raw pixels vs supervised on the bundled digits (~1 minute)"
    )
    add("--out", default="runs/demo", help="output folder (default runs/demo)")
    _settings(add, "key=value changes to the digits preset, e.g. seed=3 epochs=100")
    return parser


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    args.handler(args)
    return 0


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
