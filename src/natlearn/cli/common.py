"""What the sub-commands share: how a sub-command is declared, the evaluation flags and key=value
settings, and the checks and helpers of their arguments. Nothing here imports torch at module level:
``natlearn --help`` builds every sub-command's parser without it."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from pathlib import Path

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.evaluate.probes.protocols import names
from natlearn.presets import load_preset

__all__ = [
    "Command",
    "check_layers",
    "data_overrides",
    "eval_flags",
    "eval_layers",
    "eval_settings",
    "figure_path",
    "names",
    "numbers",
    "presets_epilog",
    "progress",
    "refresh_board",
    "settings_argument",
    "split_preset",
]

Command = Callable[..., Callable[..., argparse.Action]]
"""``command(name, summary, run, **parser_options)``: a new sub-command run by ``run(args)``;
returns its parser's add_argument."""


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


def presets_epilog() -> str:
    from natlearn.presets import preset_descriptions

    lines = ["presets (their settings: natlearn/configs/NAME.yaml; or give your own YAML file):"]
    for name, text in preset_descriptions().items():
        lines += _wrapped(name, text)
    return "\n".join(lines)


def eval_flags(add: Callable[..., argparse.Action]) -> None:
    """The options of the commands that evaluate (``add``: their parser's add_argument): every
    protocol's, from the table."""
    from natlearn.evaluate.probes.protocols import add_flags

    add_flags(add)


def settings_argument(add: Callable[..., argparse.Action], help: str) -> None:
    """The key=value settings (``args.settings``), any number of them."""
    add("settings", nargs="*", default=[], help=help)


def split_preset(settings: list[str]) -> tuple[Config | None, list[str]]:
    """An optional preset name or YAML file first, then key=value settings."""
    if settings and "=" not in settings[0]:
        return load_preset(settings[0]), settings[1:]
    return None, list(settings)


def eval_settings(args: argparse.Namespace):
    """The EvalSettings of the evaluation flags, checked."""
    from natlearn.evaluate.probes.protocols import flag_values
    from natlearn.evaluate.probes.settings import EvalSettings

    return EvalSettings.from_flags(flag_values(args))


def numbers(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated positive numbers of ``option``, or a one-line error."""
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise NatlearnError(
            f"{option} {text!r} must be comma-separated positive numbers, e.g. 0.01"
        )
    return values


def check_layers(config: Config, source: str, **flags: list[str]) -> None:
    """Refuse layer names the network of ``config`` lacks (before any work), listing the valid
    ones. ``flags``: option name with "_" for "-" (``knn_layers``) -> the names given."""
    from natlearn.models import feature_layers

    valid = feature_layers(config.arch, config.widths)
    for flag, given in flags.items():
        unknown = [name for name in given if name not in valid]
        if unknown:
            option = "--" + flag.replace("_", "-")
            raise NatlearnError(
                f"{option} {','.join(unknown)}: no such layer in {source}; "
                f"valid layers: {', '.join(valid)}"
            )


def eval_layers(args: argparse.Namespace, config: Config, source: str) -> None:
    """Refuse the layers the evaluation flags name that the network of ``config`` lacks."""
    from natlearn.evaluate.probes.protocols import layer_flags

    check_layers(config, source, **layer_flags(args))


def progress(overrides: list[str]) -> bool:
    """The ``progress=`` of a command's key=value settings (progress=false: quiet)."""
    return apply_overrides(Config(), overrides).progress


def data_overrides(items: list[str]) -> list[str]:
    apply_overrides(Config(), items)  # reject unknown keys before any work
    return items


def figure_path(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise NatlearnError(f"--out {out}: the figure is a PNG; give a file name ending in .png")
    return path


def refresh_board(source: str) -> None:
    """Show the run's evaluations and figures in its TensorBoard (runs with logger=tensorboard)."""
    from natlearn.evaluate.reports.board import update_board
    from natlearn.evaluate.sources import run_folder

    run = run_folder(source, Path(source))
    folder = update_board(run) if (run / "checkpoints").is_dir() else None
    if folder is not None:
        print(f"TensorBoard: evaluations and figures in {folder} (tensorboard --logdir {run})")
