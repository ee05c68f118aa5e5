"""``natlearn train``: a new run, or the one in out= continued (--resume)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from natlearn.cli.common import Command, presets_epilog, settings_argument, split_preset
from natlearn.config import Config, apply_overrides

__all__ = ["add_arguments", "run"]


def _config_epilog() -> str:
    """Every Config field with its default and its docstring (undocumented: name=default only)."""
    from natlearn.presets import field_help

    defaults, docs = Config(), field_help()
    lines = ["config keys (key=value; defaults shown):"]
    for field in dataclasses.fields(Config):
        value = f"{field.name}={getattr(defaults, field.name)!s}"
        lines.append(f"  {value}: {docs[field.name]}" if field.name in docs else f"  {value}")
    return "\n".join(lines)


def add_arguments(command: Command) -> None:
    add = command(
        "train",
        "train a network with NAT (or the supervised baseline)",
        run,
        description="natlearn train [PRESET|FILE.yaml] [key=value ...]  "
        "e.g. natlearn train digits epochs=10 out=runs/digits",
        epilog=f"{presets_epilog()}\n\n{_config_epilog()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settings_argument(add, "an optional preset name or YAML file first, then key=value overrides")
    add(
        "--resume",
        action="store_true",
        help="continue the run in out= from its newest readable checkpoint",
    )
    add("--overwrite", action="store_true", help="delete an earlier run in out= and start over")
    add("--supervised", action="store_true", help="train on labels instead (objective=supervised)")


def run(args: argparse.Namespace) -> None:
    import torch

    from natlearn.training.resume import resume_config
    from natlearn.training.trainer import train

    base, settings = split_preset(args.settings)
    if args.supervised:
        settings.append("objective=supervised")
    config = (
        resume_config(base, settings)
        if args.resume
        else apply_overrides(base or Config(), settings)
    )
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if torch.distributed.is_initialized():  # under torchrun: leave together, rank 0 reports
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if os.environ.get("RANK") != "0":
            return
    last = result.history[-1] if result.history else {}
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "epoch")
    out = result.run_dir
    print(
        f"done: {len(result.history)} epochs in {out}: log.jsonl, checkpoints/last.pt, "
        f"backbone.safetensors; last epoch: {summary}\n"
        f"next: natlearn eval {out}  (probes on the frozen features), then natlearn report {out}"
    )
