"""Reusing an evaluation already on disk. Every ``eval.json`` records what it measured (its
``key``): the network (the checkpoint file's sha256, or the config a random init is built from),
the evaluation settings, a digest of the train and test images and labels, the crop size, and the
protocol version. ``compare`` and ``evolution`` reuse a stored evaluation whose key matches exactly,
and recompute otherwise (:func:`reuse_or_measure`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from natlearn.progress import say

__all__ = [
    "PROTOCOL_VERSION",
    "checkpoint_network",
    "data_digest",
    "eval_key",
    "file_sha256",
    "find_reusable",
    "random_init_network",
    "reuse_or_measure",
]

# Bump when a probe's code changes the numbers it gives: evaluations stored before are recomputed.
PROTOCOL_VERSION = 2

# Settings that do not change a number (what is shown while it runs, how many processes read a
# streamed folder).
_NOT_MEASURED = ("progress", "workers")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_network(path: str | Path) -> dict:
    """A trained network's part of the key: its checkpoint file's sha256 (the same bytes copied
    elsewhere, as ``last.pt`` is, are the same network)."""
    return {"checkpoint_sha256": file_sha256(path)}


def random_init_network(config) -> dict:
    """An untrained network's part of the key: the config it is built from (seed, architecture,
    input), less what only shows progress or names the output folder."""
    skip = ("progress", "out")
    return {"random_init": {k: v for k, v in config.to_dict().items() if k not in skip}}


def data_digest(dataset) -> str:
    """sha256 of a split's decoded images and labels (in order): a changed, added, removed or
    relabelled image changes it. A streamed folder (no images in memory) stands for them by its
    split note, the side its images are read at, and each file's path, size and modification time,
    as the decode cache keys a folder."""
    digest = hashlib.sha256()
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if images is not None:
        digest.update(f"{tuple(images.shape)} {images.dtype}\n".encode())
        digest.update(images.contiguous().numpy().tobytes())
    else:
        digest.update(f"{dataset.split_note}\n{len(dataset)}\n{dataset.image_size}\n".encode())
        for path in dataset.files or ():
            stat = Path(path).stat()
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    if labels is not None:
        digest.update(labels.to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def eval_key(network: dict, settings, train_set, test_set, crop_size: int) -> dict:
    """What an evaluation measured, as stored in its ``eval.json`` under ``"key"``.

    Args:
        network: :func:`checkpoint_network`, :func:`random_init_network`, or ``{"features":
            name}`` for features of no network (raw pixels, hand-crafted).
        settings: the EvalSettings, already matched to the training config (crop, scale, flip).
    """
    measured = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in settings.as_dict().items()
        if key not in _NOT_MEASURED
    }
    return json.loads(
        json.dumps(  # the form it has once written and read back (tuples -> lists)
            {
                "protocol_version": PROTOCOL_VERSION,
                "network": network,
                "settings": measured,
                "crop_size": crop_size,
                "train_data": data_digest(train_set),
                "test_data": data_digest(test_set),
            }
        )
    )


def find_reusable(key: dict, candidates: Iterable[Path]) -> tuple[Path, dict] | None:
    """The first evaluation among ``candidates`` whose stored key equals ``key``, with its file:
    an ``eval.json`` (one evaluation) or a row of an ``evolution.json`` (a list of them). Missing
    or unreadable files are skipped."""
    for path in dict.fromkeys(Path(p) for p in candidates):
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for row in stored if isinstance(stored, list) else [stored]:
            if isinstance(row, dict) and row.get("key") == key and "protocols" in row:
                return path, row
    return None


def reuse_or_measure(
    key: dict,
    candidates: Iterable[Path],
    label: str,
    same: str,
    measure: Callable[[], dict],
    progress: bool,
) -> tuple[dict, Path | None]:
    """The evaluation ``key`` names, and the file it was reused from: the first stored one among
    ``candidates`` (:func:`find_reusable`; said as ``label: reusing FILE (same {same}settings and
    data)``), else ``measure()``'s results and None."""
    found = find_reusable(key, candidates)
    if found is None:
        return measure(), None
    path, stored = found
    say(f"{label}: reusing {path} (same {same}settings and data)", progress)
    return stored, path
