"""Transfer accuracy of the checkpoints kept along a run, against the epoch (the paper's Figure 4
idea)."""

from __future__ import annotations

import json
from pathlib import Path

from natlearn.config import Config, apply_overrides, resolve_device
from natlearn.errors import NatlearnError
from natlearn.evaluate.probes.run import labelled_splits
from natlearn.evaluate.probes.scoring import evaluate_network
from natlearn.evaluate.probes.settings import EvalSettings
from natlearn.evaluate.reports.figures import figure_title, line_plot
from natlearn.evaluate.reuse import (
    checkpoint_network,
    eval_key,
    random_init_network,
    reuse_or_measure,
)
from natlearn.files import atomic_write
from natlearn.markdown import table
from natlearn.models import initial_model
from natlearn.progress import progress_enabled, say, steps
from natlearn.training.checkpoint import (
    checkpoint_paths,
    evaluation_config,
    load_checkpoint,
    network_from_state,
)

__all__ = ["evolution"]


def evolution(
    run_dir: str | Path,
    settings: EvalSettings,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
) -> list[dict]:
    """Evaluate the random initialisation (epoch 0) and every kept checkpoint of ``run_dir``.

    Keep checkpoints along a run with ``keep_every=N`` at training time. ``overrides`` change the
    data settings and pick the ``device=`` (default auto), as for
    :func:`natlearn.evaluate.evaluate`. Writes ``out/evolution.json``, ``evolution.md`` and
    ``evolution.png`` (default ``out = run_dir/evolution``).

    Returns:
        one row per epoch: {"epoch": E, "protocols": {protocol: {layer: {"top1": ...}}}}.
    """
    run_dir = Path(run_dir)
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise NatlearnError(
            f"no checkpoints in {run_dir / 'checkpoints'}; "
            "train with keep_every=N to keep some along the run"
        )
    first = load_checkpoint(paths[0])
    overrides = overrides or []
    device = resolve_device(apply_overrides(Config(), overrides).device)  # never the run's own
    config, _ = evaluation_config(first, overrides)
    with progress_enabled(settings.progress):
        train_set, test_set = labelled_splits(config, first, str(run_dir))
    crop_size = config.resolve(train_set.image_size).crop_size
    settings = settings.matching(config)
    out = Path(out) if out else run_dir / "evolution"
    # Rows of an earlier evolution.json, and the run's eval.json, are reused where they measured the
    # same network, settings and data (their "key"); the rest is evaluated.
    earlier = [out / "evolution.json", run_dir / "eval" / "eval.json"]
    rows = []
    checkpoints = steps([None, *paths], "evolution", enabled=settings.progress, unit="checkpoints")
    for index, path in enumerate(checkpoints):
        state = load_checkpoint(path) if path is not None else None
        epoch = state["epoch"] if state is not None else 0
        network = checkpoint_network(path) if path is not None else random_init_network(config)
        key = eval_key(network, settings, train_set, test_set, crop_size)
        what = f"evolution [{index + 1}/{len(paths) + 1}]: epoch {epoch}"

        def measure(state=state, path=path, what=what) -> dict:
            say(f"{what} ({path or 'random init'})", settings.progress)
            model = initial_model(config, train_set) if state is None else network_from_state(state)
            return evaluate_network(model.to(device), train_set, test_set, crop_size, settings)

        measured, reused = reuse_or_measure(
            key, earlier, what, "network, ", measure, settings.progress
        )
        if reused is not None:
            measured = {"protocols": measured["protocols"], "seconds": measured.get("seconds", 0.0)}
        rows.append({"epoch": epoch, **measured, "key": key})
    _write(rows, out, run_dir, config, settings, len(train_set.classes))
    return rows


def _write(
    rows: list[dict], out: Path, run_dir: Path, config: Config, settings: EvalSettings, classes: int
) -> None:
    """``out/evolution.json``, and the first protocol's top-1 per layer against the epoch as
    ``evolution.png`` and ``evolution.md``."""
    atomic_write(
        out / "evolution.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=2) + "\n")
    )
    protocol = "linear" if settings.linear else next(iter(rows[0]["protocols"]))
    layers = list(rows[0]["protocols"][protocol])
    series = {
        layer: [row["protocols"][protocol][layer]["top1"] for row in rows] for layer in layers
    }
    epochs = [row["epoch"] for row in rows]
    line_plot(
        epochs,
        series,
        "epoch (0 = random init)",
        f"{protocol} top-1",
        f"{run_dir.name}: {figure_title(config)}, transfer along training",
        out / "evolution.png",
        chance=1 / classes,
    )
    cells = [[e, *(f"{series[layer][i]:.4f}" for layer in layers)] for i, e in enumerate(epochs)]
    what = f"{protocol} probe top-1 per layer ({config.data})"
    text = f"# Feature evolution of {run_dir}\n\n{what}.\n\n{table(['epoch', *layers], cells)}\n"
    atomic_write(out / "evolution.md", lambda tmp: tmp.write_text(text))
