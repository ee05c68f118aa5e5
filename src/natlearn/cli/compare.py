"""``natlearn compare``: several sources side by side, with the gap NAT recovers."""

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
    progress,
)
from natlearn.errors import NatlearnError

__all__ = ["add_arguments", "run"]


def add_arguments(command: Command) -> None:
    add = command(
        "compare",
        "several checkpoints and baselines side by side, with the gap NAT recovers",
        run,
    )
    add(
        "sources",
        nargs="+",
        help="checkpoints, pretrained:NAME, random-init, raw-pixels, hand-crafted, then key=value "
        "data settings",
    )
    add("--out", required=True, help="output folder: one eval per source plus compare.md/json")
    eval_flags(add)


def run(args: argparse.Namespace) -> None:
    from natlearn.evaluate.reports.compare import compare_sources, compare_table
    from natlearn.evaluate.sources import source_config

    sources = [item for item in args.sources if "=" not in item]
    overrides = data_overrides([item for item in args.sources if "=" in item])
    if not sources:
        raise NatlearnError(
            "compare needs at least one source: checkpoint .pt files, pretrained:NAME, "
            "random-init, raw-pixels or hand-crafted, before the key=value settings"
        )
    checkpoints = [s for s in sources if s not in BASELINES]
    settings, out = eval_settings(args), Path(args.out)
    base = source_config(checkpoints[0], None, overrides) if checkpoints else None
    for source in sources:  # every checkpoint readable, every layer known, before evaluating
        config = source_config(source, base, overrides)
        if config is not None:
            eval_layers(args, config, source)
    settings.progress = progress(overrides)
    results = compare_sources(sources, overrides, settings, out, base)
    print(compare_table(results, out))
    print(f"wrote {out / 'compare.md'}, compare.json and each source's eval in {out}/N-NAME/")
