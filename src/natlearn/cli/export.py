"""``natlearn export``: a checkpoint's backbone as a state_dict file."""

from __future__ import annotations

import argparse

from natlearn.cli.common import Command

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "export",
        "a checkpoint's backbone as a state_dict (a .safetensors file rebuilds it alone)",
        run,
    )
    add("checkpoint", help="a run folder (its newest checkpoint) or a .pt file from natlearn train")
    add(
        "--out", required=True, help="output file: backbone.pt (torch.save) or backbone.safetensors"
    )
    add(
        "--format",
        choices=("natlearn", "torchvision"),
        default="natlearn",
        help="natlearn: natlearn's module keys; torchvision: a ResNet's torchvision.models keys",
    )


def run(args: argparse.Namespace) -> None:
    from natlearn.export import export_backbone

    print(f"wrote {export_backbone(args.checkpoint, args.out, args.format)}")
