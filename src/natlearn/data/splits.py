"""The splits of a folder of images: ``train/`` and ``test/`` sub-folders, or a held-out test split.

A class folder without ``train/`` and ``test/`` holds out a seeded, stratified fraction of each
class as its test split, so evaluation never scores the images pre-training saw. Which images those
are depends on the folder's listing as well as on split_seed and test_fraction, so a training run
stores a :func:`split_record` of the split it pre-trained on, and :func:`check_split` refuses to
score it on another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from natlearn.data.folder import FolderListing, class_folders, scan_folder
from natlearn.errors import NatlearnError

__all__ = [
    "FolderSplit",
    "check_split",
    "held_out",
    "listing_digest",
    "split_listing",
    "split_note",
    "split_record",
]

Layout = Literal["sub-folders", "held-out", "flat"]


@dataclass(frozen=True)
class FolderSplit:
    """One split of a folder.

    Attributes:
        whole: the listing the split is drawn from (decoded, and cached, as one for every split).
        part: the split's own files.
        layout: ``sub-folders`` (``train/`` and ``test/``), ``held-out`` (class folders, a seeded
            stratified fraction held out) or ``flat`` (no class folders: unlabelled).
    """

    whole: FolderListing
    part: FolderListing
    layout: Layout


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


def split_listing(path: Path, split: str, seed: int, test_fraction: float) -> FolderSplit:
    """The ``split`` of folder ``path``. In a folder with ``train/`` and ``test/``, a label means
    the same class in both: the test split is labelled by train/'s class folders."""
    if (path / "train").is_dir() and (path / "test").is_dir():
        if split not in ("train", "test"):
            raise NatlearnError(
                f"{path} has train/ and test/ folders; split={split!r} must be train or test"
            )
        listing = scan_folder(path / split)
        if split == "test":
            listing = _labelled_by_train_classes(listing, path / "train")
        return FolderSplit(listing, listing, "sub-folders")
    if split not in ("train", "test", "all"):
        raise NatlearnError(f"a folder has no split {split!r}; choose train, test or all")
    listing = scan_folder(path)
    if not listing.classes:
        if split == "test":
            raise NatlearnError(
                f"{path} is an unlabelled flat folder (no class sub-folders): evaluation needs "
                "labels; put the images in one sub-folder per class"
            )
        return FolderSplit(listing, listing, "flat")
    if split == "all":
        return FolderSplit(listing, listing, "held-out")
    chosen = held_out(listing, seed, test_fraction)
    if split == "train":
        chosen = ~chosen
    files = [f for f, keep in zip(listing.files, chosen, strict=True) if keep]
    part = dataclasses.replace(
        listing, files=files, labels=np.asarray(listing.labels)[chosen].tolist()
    )
    return FolderSplit(listing, part, "held-out")


def _labelled_by_train_classes(test: FolderListing, train: Path) -> FolderListing:
    """``test`` labelled by the class folders of ``train``: scanned on its own, test/ without one
    of train/'s classes would shift every later label to another class. A test class train/ lacks
    has no label a probe could give it: one clear error. A flat train/ has no classes to key by."""
    classes = [folder.name for folder in class_folders(train)]
    if not classes or not test.classes:
        return test
    index = {name: label for label, name in enumerate(classes)}
    unknown = [name for name in test.classes if name not in index]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown = ", ".join(unknown[:5]) + more
        raise NatlearnError(
            f"{test.root} has class folder(s) that {train} lacks: {shown}; every test class must "
            "be a class of train/ (rename it to its train/ name, or remove it)"
        )
    labels = [index[test.classes[label]] for label in test.labels]
    return dataclasses.replace(test, labels=labels, classes=classes)


def listing_digest(listing: FolderListing) -> str:
    """sha256 of a listing's class names and of each file's path (relative to its folder) and
    label: what decides which images a held-out split holds. File contents and times are left out,
    so a copy of the folder on another machine has the same digest."""
    digest = hashlib.sha256(("classes\t" + "\t".join(listing.classes) + "\n").encode())
    for path, label in zip(listing.files, listing.labels, strict=True):
        digest.update(f"{path.relative_to(listing.root).as_posix()}\t{label}\n".encode())
    return digest.hexdigest()


def split_record(
    path: Path, split: str, folder_split: FolderSplit, seed: int, test_fraction: float
) -> dict:
    """What fixes the images of a folder split, as a run stores it: the folder, its layout, the
    split, a :func:`listing_digest` of the listing the split is drawn from (with its image and
    class counts, for messages) and, for a held-out split, split_seed and test_fraction."""
    whole = folder_split.whole
    record = {
        "folder": str(path.resolve()),
        "layout": folder_split.layout,
        "split": split,
        "listing": listing_digest(whole),
        "images": len(whole.files),
        "classes": len(whole.classes),
    }
    if folder_split.layout == "held-out":
        record.update(split_seed=seed, test_fraction=test_fraction)
    return record


def check_split(pretrained: dict | None, evaluated: dict | None, same_data: bool, run: str) -> None:
    """Refuse, in one line, to score ``run`` on a held-out test split other than the one its
    pre-training left out: the folder's listing changed since (images added, removed, renamed, or
    a class folder added), or split_seed / test_fraction differ. Either way the split is drawn
    anew, and some of its test images were pre-trained on.

    Args:
        pretrained: the :func:`split_record` the run stored of the split it pre-trained on; None
            for a named data set, or a run trained before natlearn stored it (then a warning says
            that the split cannot be checked).
        evaluated: the record of the train split evaluation reads (None: a named data set).
        same_data: whether evaluation reads the data the run pre-trained on (its ``data=``, or the
            folder it recorded); another folder's images were never pre-trained on.
    """
    if evaluated is None or not same_data:
        return
    if pretrained is None:
        if evaluated["layout"] == "held-out":
            warnings.warn(
                f"{run} holds no record of the split it pre-trained on (trained before natlearn "
                f"stored one): the held-out test split is drawn from {evaluated['folder']} as it "
                "is now, unchecked; if images were added, removed or renamed since training, some "
                "test images were pre-trained on",
                stacklevel=3,
            )
        return
    if pretrained["layout"] != "held-out" or pretrained["split"] != "train":
        return  # test/ was never pre-trained on, or every image was (train_split=all)
    if evaluated["listing"] != pretrained["listing"]:
        then, now = pretrained, evaluated
        raise NatlearnError(
            f"{then['folder']} changed since {run} pre-trained on it ({then['images']:,} images "
            f"in {then['classes']} class folders then, {now['images']:,} in {now['classes']} "
            "now): its held-out test split would hold images pre-training saw; restore the "
            "folder as it was, or train a new run on it"
        )
    differ = [
        f"{key}={evaluated.get(key)} (the run's: {pretrained[key]})"
        for key in ("split_seed", "test_fraction")
        if evaluated.get(key) != pretrained[key]
    ]
    if differ:
        raise NatlearnError(
            f"{' and '.join(differ)} would draw another held-out test split than the one {run} "
            "left out of pre-training, holding images it pre-trained on; drop the setting to "
            "score the run's own test split"
        )


def split_note(
    path: Path,
    split: str,
    layout: Layout,
    seed: int,
    test_fraction: float,
    count: int,
    total: int,
) -> str:
    """Where a folder split's ``count`` images (of the folder's ``total``) came from."""
    if layout == "sub-folders":
        return str(path / split)
    if layout == "flat":
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
