"""Evaluation: how well frozen features transfer, by the standard protocols, with the same code for
NAT, its baselines (random init, supervised, raw pixels), and checkpoints along a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from natlearn.config import Config, apply_overrides, resolve_device
from natlearn.data import load_split, require_labels
from natlearn.data.splits import check_split
from natlearn.evaluate.features import extract_features, pool_conv_map
from natlearn.evaluate.knn import knn_classify
from natlearn.evaluate.mlp import mlp_probe
from natlearn.evaluate.probes import ProbeResult, linear_probe
from natlearn.evaluate.reuse import (
    checkpoint_network,
    eval_key,
    find_reusable,
    random_init_network,
)
from natlearn.evaluate.transfer import (
    EvalSettings,
    evaluate_handcrafted,
    evaluate_network,
    evaluate_pixels,
    finetune,
    format_eval,
    write_eval,
)
from natlearn.models import initial_model
from natlearn.progress import progress_enabled, say
from natlearn.training.checkpoint import (
    checkpoint_file,
    evaluation_config,
    load_checkpoint,
    network_from_state,
)

__all__ = [
    "EvalSettings",
    "ProbeResult",
    "evaluate",
    "evaluate_handcrafted",
    "evaluate_network",
    "evaluate_pixels",
    "extract_features",
    "finetune",
    "format_eval",
    "knn_classify",
    "labelled_splits",
    "linear_probe",
    "mlp_probe",
    "pool_conv_map",
    "write_eval",
]

RANDOM_INIT, RAW_PIXELS, HAND_CRAFTED = "random-init", "raw-pixels", "hand-crafted"
# Sources without a network: features computed from the images alone.
FIXED_FEATURES = {RAW_PIXELS: evaluate_pixels, HAND_CRAFTED: evaluate_handcrafted}


def labelled_splits(config: Config, state: dict | None = None, run: str = ""):
    """(train, test) labelled splits of the config's data set for fitting and scoring probes.

    Args:
        state: the loaded checkpoint of ``run`` being evaluated: a held-out test split must be the
            one its pre-training left out (:func:`natlearn.data.splits.check_split`).
    """
    train, test = load_split(config, "train"), load_split(config, "test")
    for split, data in (("train", train), ("test", test)):
        require_labels(data, f"evaluation ({split} split)")
    if state is not None:
        pretrained = state.get("data", {}).get("split")
        trained_on = state["config"]["data"]
        folders = {Path(trained_on).resolve()}
        if pretrained is not None:
            folders.add(Path(pretrained["folder"]))
        same = config.data == trained_on or Path(config.data).resolve() in folders
        check_split(pretrained, train.split_record, same, run)
    return train, test


def _view(settings: EvalSettings, crop_size: int) -> str:
    if settings.crop == "resized":
        return f"a centred box of the mean training crop's side resized to {crop_size}x{crop_size}"
    return f"centre {crop_size}x{crop_size} crops"


def start_up_summary(
    source: str,
    config: Config,
    train_set,
    test_set,
    settings: EvalSettings,
    crop_size: int,
    device: torch.device,
    model=None,
    size_note: str = "",
) -> str:
    """What an evaluation is about to do, in three lines: the data as found (``size_note``: where
    the image size came from), what is scored, and the protocols on ``device``."""
    size = f"{train_set.image_size} px" + (f" ({size_note})" if size_note else "")
    data = (
        f"data: {config.data}: {len(train_set):,} train images ({train_set.split_note}), "
        f"{len(test_set):,} test images ({test_set.split_note}), {len(train_set.classes)} "
        f"classes; {size}, {_view(settings, crop_size)}"
    )
    if model is None:
        what = "the view" if source == RAW_PIXELS else "Coates & Ng k-means features"
        scored = f"features: {source} ({what})"
        layers = ["features"]
    else:
        parameters = sum(p.numel() for p in model.parameters())
        how = "untrained" if source == RANDOM_INIT else f"trained with {config.objective}"
        scored = f"network: {config.arch}, {parameters:,} parameters, {how}; {config.input} input"
        layers = settings.layers or [*model.conv_names, "neck"]
    protocols = [f"linear on {', '.join(layers)}"] if settings.linear else []
    if settings.knn:
        on = ", ".join(settings.knn_layers) if model is not None else "features"
        protocols.append(f"{'/'.join(map(str, settings.knn))}-NN on {on}")
    if settings.mlp and model is not None:
        protocols.append(f"MLP on {model.conv_names[-1]}")
    if settings.finetune_epochs and model is not None:
        protocols.append(f"fine-tuning {settings.finetune_epochs} epochs")
    machine = f"{device}, {torch.get_num_threads()} threads"
    return "\n".join([data, scored, f"protocols: {'; '.join(protocols) or 'none'}; {machine}"])


def evaluate(
    source: str,
    overrides: list[str],
    settings: EvalSettings,
    out: str | Path | None = None,
    base: Config | None = None,
    reuse: Sequence[str | Path] = (),
) -> dict:
    """Evaluate a checkpoint, ``random-init``, ``raw-pixels`` or ``hand-crafted`` and write
    ``out/eval.json`` + ``eval.md``.

    The results hold a ``key`` saying what was measured (:func:`natlearn.evaluate.reuse.eval_key`):
    the first ``eval.json`` of ``reuse`` with the same key (same checkpoint bytes or random-init
    config, settings, crop size and train/test images) is returned, and copied to ``out``, instead
    of evaluating again.

    Args:
        source: a checkpoint path, or ``random-init`` / ``raw-pixels`` / ``hand-crafted`` (their
            network and data come from ``base``).
        overrides: ``key=value`` changes to the data settings (e.g. ``data=...``,
            ``data_root=...``), and ``device=`` (default auto: the GPU when one is visible; never
            the device a checkpoint trained on). A checkpoint reads images at the size it trained
            at unless ``image_size=`` is given
            (:func:`~natlearn.training.checkpoint.evaluation_config`).
        base: the config of random-init / raw-pixels / hand-crafted (default: natlearn's
            defaults).
        reuse: ``eval.json`` files that may hold this evaluation already (missing ones are fine).
    """
    state = None if source == RANDOM_INIT or source in FIXED_FEATURES else load_checkpoint(source)
    device = resolve_device(apply_overrides(Config(), overrides).device)
    if state:
        config, size_note = evaluation_config(state, overrides)
    else:
        config, size_note = apply_overrides(base or Config(), overrides), ""
    config = dataclasses.replace(config, progress=settings.progress)
    settings = settings.matching(config)
    with progress_enabled(settings.progress):  # decoding a folder says how far it is
        train_set, test_set = labelled_splits(config, state, source)
    crop_size = config.resolve(train_set.image_size).crop_size
    if source in FIXED_FEATURES:
        from natlearn.evaluate.handcrafted import SETTINGS

        what = dict(SETTINGS) if source == HAND_CRAFTED else {}
        network: dict = {"features": source, **what}
    elif state is None:
        network = random_init_network(config)
    else:
        checkpoint = checkpoint_file(source)
        network = checkpoint_network(checkpoint)
    key = eval_key(network, settings, train_set, test_set, crop_size)
    found = find_reusable(key, [Path(path) for path in reuse])
    if found is not None:
        path, stored = found
        same = "checkpoint, " if state else "network config, " if source == RANDOM_INIT else ""
        say(f"{source}: reusing {path} (same {same}settings and data)", settings.progress)
        results = {**stored, "model": source, "reused": str(path)}
        if state is not None:
            results["checkpoint"] = str(checkpoint)
        if out is not None and Path(out).resolve() != path.parent.resolve():
            write_eval(Path(out), results)
        return results
    model = None
    if source not in FIXED_FEATURES:
        model = network_from_state(state) if state else initial_model(config, train_set).eval()
    summary = start_up_summary(
        source, config, train_set, test_set, settings, crop_size, device, model, size_note
    )
    say(summary, settings.progress)
    if model is None:
        results = FIXED_FEATURES[source](train_set, test_set, crop_size, settings, device)
    else:
        results = evaluate_network(model.to(device), train_set, test_set, crop_size, settings)
    results = {
        "model": source,
        "objective": "none" if source in FIXED_FEATURES else config.objective,
        "data": config.data,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "train_split": train_set.split_note,
        "test_split": test_set.split_note,
        "setup": (
            f"{config.data}: probes fit on {len(train_set):,} train images "
            f"({train_set.split_note}), scored once on {len(test_set):,} test images "
            f"({test_set.split_note}); every choice (weight decay, layer) made on held-out train "
            f"images; {_view(settings, crop_size)}, no augmentation."
        ),
        **results,
        "key": key,
    }
    if state is not None:
        results["checkpoint"], results["epoch"] = str(checkpoint), state["epoch"]
    if out is not None:
        write_eval(Path(out), results)
    return results
