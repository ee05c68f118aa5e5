"""``natlearn transfer voc07``: the sources' networks fine-tuned and probed on Pascal VOC 2007; the
arguments are checked here, before any work, and the run is
:func:`natlearn.evaluate.voc.run.voc07_transfer`."""

from __future__ import annotations

import argparse
from pathlib import Path

from natlearn.choices import NO_NETWORK, RANDOM_INIT
from natlearn.cli.common import (
    Command,
    check_layers,
    data_overrides,
    names,
    numbers,
    progress,
)
from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError

__all__ = ["add_arguments", "run"]

# Settings of `natlearn transfer` that are about the VOC data, not the network's config (data_root
# and image_size name the VOC folder and the size its images are resized to).
_TRANSFER_KEYS = ("data_root", "download", "image_size")


def add_arguments(command: Command) -> None:
    add = command(
        "transfer",
        "Pascal VOC 2007 transfer: classification mAP (linear, fine-tuned), Faster R-CNN detection",
        run,
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


def _split_items(items: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(sources, VOC settings, config overrides) of ``natlearn transfer``'s positionals."""
    sources = [item for item in items if "=" not in item]
    pairs = [item for item in items if "=" in item]
    voc = dict(item.split("=", 1) for item in pairs if item.split("=", 1)[0] in _TRANSFER_KEYS)
    overrides = [item for item in pairs if item.split("=", 1)[0] not in _TRANSFER_KEYS]
    return sources, voc, data_overrides(overrides)


def _sources(args: argparse.Namespace) -> tuple[list[str], dict[str, str], list[str]]:
    """(sources, data settings, other settings) of the command line; refuses no source, or one
    without a network."""
    sources, given, overrides = _split_items(args.items)
    if not sources:
        raise NatlearnError(
            "transfer needs at least one source: run folders, checkpoint .pt files or random-init, "
            "before the key=value settings"
        )
    fixed = [source for source in sources if source in NO_NETWORK]
    if fixed:
        raise NatlearnError(
            f"transfer {args.benchmark} fine-tunes and probes networks; {fixed[0]} has none: give "
            "run folders, checkpoints or random-init"
        )
    return sources, given, overrides


def _check_source(
    source: str, config: Config, layers: list[str], detect, image_size: int, spec: dict | None
) -> None:
    """Refuse, before any work, a source whose probed ``layers`` or detection layer its network
    lacks, or a random-init source whose image size cannot be worked out."""
    from natlearn.evaluate.voc.run import transfer_image_size
    from natlearn.models import feature_layers

    check_layers(config, source, layers=layers)
    if detect is not None:
        from natlearn.evaluate.voc.detector import detection_layer

        trunk = feature_layers(config.arch, config.widths)[:-2]  # less neck and head
        detection_layer(config.arch, trunk, detect.layer)
    if source == RANDOM_INIT:  # a checkpoint always knows its size
        transfer_image_size(image_size, config, spec, source)


def _detection_settings(args: argparse.Namespace):
    """The detection settings of ``--task detect|both`` from the --detect-* options, checked now
    (None for classify)."""
    if args.task == "classify":
        return None
    from natlearn.evaluate.voc.detector import DetectionSettings

    return DetectionSettings(
        image_size=args.detect_size,
        layer=args.detect_layer or None,
        epochs=args.detect_epochs,
        batch_size=args.detect_batch_size,
    ).resolved()


def run(args: argparse.Namespace) -> None:
    from natlearn.config import resolve_device
    from natlearn.evaluate.sources import source_config
    from natlearn.evaluate.voc.classification import ClassifySettings
    from natlearn.evaluate.voc.results import format_transfer
    from natlearn.evaluate.voc.run import voc07_transfer
    from natlearn.training.checkpoint import load_checkpoint

    sources, given, overrides = _sources(args)
    checked = apply_overrides(
        Config(), [f"{key}={value}" for key, value in given.items() if key != "data_root"]
    )  # download and image_size parsed and checked as the config's own
    lrs = numbers(args.finetune_lr, "--finetune-lr")
    if args.finetune < 0:
        raise NatlearnError(f"--finetune {args.finetune} must be >= 0 (0 = no fine-tuning)")
    settings = ClassifySettings(
        layers=tuple(names(args.layers)) or ("neck",),
        linear=not args.no_linear,
        finetune_epochs=args.finetune,
        finetune_lrs=lrs,
        progress=progress(overrides),
    )
    checkpoints = [source for source in sources if source != RANDOM_INIT]
    base = source_config(checkpoints[0], None, overrides) if checkpoints else None
    spec = load_checkpoint(checkpoints[0])["network"] if checkpoints else None
    configs = {source: source_config(source, base, overrides) for source in sources}
    detect = _detection_settings(args)
    detect_lrs = numbers(args.detect_lr, "--detect-lr")
    layers = list(settings.layers) if settings.linear else []
    for source, config in configs.items():  # every source readable, every layer known, first
        _check_source(source, config, layers, detect, checked.image_size, spec)
    device = resolve_device(apply_overrides(Config(), overrides).device)
    results = voc07_transfer(
        sources,
        configs,
        spec,
        settings,
        detect,
        detect_lrs,
        task=args.task,
        root=given.get("data_root") or "data",
        download=checked.download,
        image_size=checked.image_size,
        device=device,
        out=Path(args.out),
    )
    print(format_transfer(results))
    print(f"wrote {Path(args.out) / 'transfer.json'} and transfer.md")
