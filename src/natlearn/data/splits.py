"""The splits of a folder of images: ``train/`` and ``test/`` sub-folders, or a held-out test split.

A class folder without ``train/`` and ``test/`` holds out a seeded, stratified fraction of each
class as its test split, so evaluation never scores the images pre-training saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from natlearn.data.folder import FolderListing, scan_folder
from natlearn.errors import NatlearnError

__all__ = ["held_out", "split_listing", "split_note"]


def held_out(listing: FolderListing, seed: int, test_fraction: float) -> np.ndarray:
    """Which files of a labelled ``listing`` form the held-out test split: a boolean mask.

    Per class, round(test_fraction * count) files (at least 1 of a class with 2 or more, none of a
    class with 1, never all of them), drawn by a generator seeded from (seed, class index): the same
    files for the same seed and listing, whether or not they decode.
    """
    labels = np.asarray(listing.labels)
    mask = np.zeros(len(labels), dtype=bool)
    for label in range(len(listing.classes)):
        members = np.flatnonzero(labels == label)
        count = len(members)
        take = 0 if count < 2 else min(count - 1, max(1, round(test_fraction * count)))
        rng = np.random.default_rng(np.random.SeedSequence([seed, label]))
        mask[members[rng.permutation(count)[:take]]] = True
    return mask


def split_listing(
    path: Path, split: str, seed: int, test_fraction: float
) -> tuple[FolderListing, FolderListing, bool]:
    """(the listing to decode, the split's listing, whether they come from train/ and test/
    sub-folders)."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        if split not in ("train", "test"):
            raise NatlearnError(
                f"{path} has train/ and test/ folders; split={split!r} must be train or test"
            )
        listing = scan_folder(path / split)
        return listing, listing, True
    if split not in ("train", "test", "all"):
        raise NatlearnError(f"a folder has no split {split!r}; choose train, test or all")
    listing = scan_folder(path)
    if not listing.classes:
        if split == "test":
            raise NatlearnError(
                f"{path} is an unlabelled flat folder (no class sub-folders): evaluation needs "
                "labels; put the images in one sub-folder per class"
            )
        return listing, listing, False
    if split == "all":
        return listing, listing, False
    chosen = held_out(listing, seed, test_fraction)
    if split == "train":
        chosen = ~chosen
    files = [f for f, keep in zip(listing.files, chosen, strict=True) if keep]
    return (
        listing,
        dataclasses.replace(
            listing, files=files, labels=np.asarray(listing.labels)[chosen].tolist()
        ),
        False,
    )


def split_note(
    path: Path,
    split: str,
    labelled: bool,
    sub_folders: bool,
    seed: int,
    test_fraction: float,
    count: int,
    total: int,
) -> str:
    """Where a folder split's ``count`` images (of the folder's ``total``) came from."""
    if sub_folders:
        return str(path / split)
    if not labelled:
        return f"{path}: all {total:,} images (an unlabelled flat folder)"
    if split == "all":
        return f"{path}: all {total:,} images (the train split and the held-out test split)"
    percent = f"{100 * test_fraction:g}%"
    if split == "test":
        return (
            f"held-out test split: {percent} of each class of {path} (split_seed {seed}, "
            f"stratified), {count:,} of {total:,} images"
        )
    return (
        f"train split: the other {count:,} of {total:,} images of {path} ({percent} of each class "
        f"held out for testing, split_seed {seed})"
    )
