"""``natlearn export``: a checkpoint's backbone as a state_dict file or a Hub folder."""

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


def run(args: argparse.Namespace) -> None:
    from natlearn.export import export_backbone

    print(f"wrote {export_backbone(args.checkpoint, args.out, args.format)}")
