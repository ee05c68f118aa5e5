"""``natlearn eval``'s work: one source (a checkpoint, random init, raw pixels or hand-crafted
features) scored by the probe suite on its data set's labelled splits, or an earlier evaluation of
the same thing reused; its ``eval.json`` and ``eval.md``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from natlearn.choices import BASELINES, HAND_CRAFTED, NO_NETWORK, RANDOM_INIT, RAW_PIXELS
from natlearn.config import Config, apply_overrides, resolve_device
from natlearn.data import ImageData, load_split, require_labels
from natlearn.data.splits import check_split
from natlearn.evaluate.probes.protocols import PROTOCOLS
from natlearn.evaluate.probes.scoring import (
    evaluate_handcrafted,
    evaluate_network,
    evaluate_pixels,
)
from natlearn.evaluate.probes.settings import EvalSettings
from natlearn.evaluate.reuse import (
    checkpoint_network,
    eval_key,
    random_init_network,
    reuse_or_measure,
)
from natlearn.evaluate.sources import load_source, source_file
from natlearn.evaluate.uncertainty import with_error
from natlearn.files import atomic_write
from natlearn.markdown import table
from natlearn.models import initial_model
from natlearn.progress import progress_enabled, say
from natlearn.training.checkpoint import evaluation_config, network_from_state

__all__ = [
    "evaluate",
    "format_eval",
    "labelled_splits",
    "start_up_summary",
    "write_eval",
]

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
    else:
        parameters = sum(p.numel() for p in model.parameters())
        how = "untrained" if source == RANDOM_INIT else f"trained with {config.objective}"
        scored = f"network: {config.arch}, {parameters:,} parameters, {how}; {config.input} input"
    described = (protocol.describe(settings, model) for protocol in PROTOCOLS)
    protocols = [text for text in described if text]
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
        source: a checkpoint path, a packaged backbone (``pretrained:NAME``), or
            ``random-init`` / ``raw-pixels`` / ``hand-crafted`` (their network and data come from
            ``base``).
        overrides: ``key=value`` changes to the data settings (e.g. ``data=...``,
            ``data_root=...``), and ``device=`` (default auto: the GPU when one is visible; never
            the device a checkpoint trained on). A checkpoint reads images at the size it trained
            at unless ``image_size=`` is given
            (:func:`~natlearn.training.checkpoint.evaluation_config`).
        base: the config of random-init / raw-pixels / hand-crafted (default: natlearn's
            defaults).
        reuse: ``eval.json`` files that may hold this evaluation already (missing ones are fine).
    """
    job = _set_up(source, overrides, settings, base)
    network = _network_key(source, job.config, job.checkpoint)
    key = eval_key(network, job.settings, job.train_set, job.test_set, job.crop_size)
    same = "checkpoint, " if job.state else "network config, " if source == RANDOM_INIT else ""
    candidates = [Path(path) for path in reuse]
    measured, reused = reuse_or_measure(
        key, candidates, source, same, job.measure, job.settings.progress
    )
    if reused is not None:
        results = {**measured, "model": source, "reused": str(reused)}
        if job.checkpoint is not None:
            results["checkpoint"] = str(job.checkpoint)
        if out is not None and Path(out).resolve() != reused.parent.resolve():
            write_eval(Path(out), results)
        return results
    results = job.described(measured)
    results["key"] = key
    if job.checkpoint is not None:
        results["checkpoint"], results["epoch"] = str(job.checkpoint), job.state["epoch"]
    if out is not None:
        write_eval(Path(out), results)
    return results


@dataclass(frozen=True)
class _Evaluation:
    """What one evaluation scores, on which data, how and where: worked out before anything is
    measured or looked up."""

    source: str
    state: dict | None  # a trained source's checkpoint
    checkpoint: Path | None  # its file
    config: Config
    settings: EvalSettings
    train_set: ImageData
    test_set: ImageData
    crop_size: int
    device: torch.device
    size_note: str  # where the image size came from

    def measure(self) -> dict:
        """Print the start-up summary, then score the source's features."""
        model = None
        if self.source not in NO_NETWORK:
            model = (
                network_from_state(self.state)
                if self.state
                else initial_model(self.config, self.train_set).eval()
            )
        summary = start_up_summary(
            self.source,
            self.config,
            self.train_set,
            self.test_set,
            self.settings,
            self.crop_size,
            self.device,
            model,
            self.size_note,
        )
        say(summary, self.settings.progress)
        data = (self.train_set, self.test_set, self.crop_size, self.settings)
        if model is None:
            return FIXED_FEATURES[self.source](*data, self.device)
        return evaluate_network(model.to(self.device), *data)

    def described(self, measured: dict) -> dict:
        """The results of a new evaluation with what it ``measured``: the source, its data and
        splits."""
        train, test = self.train_set, self.test_set
        return {
            "model": self.source,
            "objective": "none" if self.source in NO_NETWORK else self.config.objective,
            "data": self.config.data,
            "train_images": len(train),
            "test_images": len(test),
            "train_split": train.split_note,
            "test_split": test.split_note,
            "setup": (
                f"{self.config.data}: probes fit on {len(train):,} train images "
                f"({train.split_note}), scored once on {len(test):,} test images "
                f"({test.split_note}); every choice (weight decay, layer) made on held-out train "
                f"images; {_view(self.settings, self.crop_size)}, no augmentation."
            ),
            **measured,
        }


def _set_up(
    source: str, overrides: list[str], settings: EvalSettings, base: Config | None
) -> _Evaluation:
    """The :class:`_Evaluation` of ``source``: its checkpoint, config and labelled splits."""
    state = None if source in BASELINES else load_source(source)
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
    checkpoint = None if state is None else source_file(source, state)
    data = (train_set, test_set, crop_size)
    return _Evaluation(source, state, checkpoint, config, settings, *data, device, size_note)


def _network_key(source: str, config: Config, checkpoint: Path | None) -> dict:
    """The network part of an evaluation's key (:func:`natlearn.evaluate.reuse.eval_key`)."""
    if source in NO_NETWORK:
        from natlearn.evaluate.probes.handcrafted import SETTINGS

        what = dict(SETTINGS) if source == HAND_CRAFTED else {}
        return {"features": source, **what}
    if checkpoint is None:
        return random_init_network(config)
    return checkpoint_network(checkpoint)


def format_eval(results: dict) -> str:
    """Markdown: one row per layer, one column per protocol (top-1 ± its standard error, and top-5
    where measured)."""
    protocols = results["protocols"]
    layers = list(dict.fromkeys(layer for scores in protocols.values() for layer in scores))

    def cells(layer: str) -> list[str]:
        return [
            layer,
            *(
                _cell(name, scores.get(layer), results["test_images"])
                for name, scores in protocols.items()
            ),
        ]

    return (
        table(["layer", *protocols], [cells(layer) for layer in layers])
        + "\n\n(top-1 ± its binomial standard error over the "
        + f"{results['test_images']:,} test images)"
    )


def _cell(protocol: str, row: dict | None, test_images: int) -> str:
    if row is None:
        return ""
    top5 = f" / {row['top5']:.4f}" if "top5" in row else ""
    # A k-NN with fewer training images than its k says how many voted.
    used_k = f" (k={row['k']})" if "k" in row and protocol != f"knn{row['k']}" else ""
    return f"{with_error(row['top1'], test_images)}{top5}{used_k}"


def write_eval(out: Path, results: dict) -> None:
    """``out/eval.json`` and ``out/eval.md``, written atomically."""
    out = Path(out)
    atomic_write(
        out / "eval.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n")
    )
    title = f"# Evaluation of {results.get('model', 'a model')}\n\n{results.get('setup', '')}\n\n"
    atomic_write(out / "eval.md", lambda tmp: tmp.write_text(title + format_eval(results) + "\n"))
