"""Data sets by name or folder, as uint8 images in memory or streamed from disk: :class:`ImageData`.

Named data sets are :mod:`natlearn.data.named`'s. Labels are kept beside the images, for
evaluation and supervised baselines only. Folders are split by :mod:`natlearn.data.splits`. Every
data set carries a ``split_note`` saying where its images came from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from natlearn.choices import BadImagePolicy, DataMode
from natlearn.data.folder import decode_folder, default_cache_dir, first_image_size
from natlearn.data.memory import ImageDataset
from natlearn.data.named import DATASETS, TORCHVISION, digits, synthetic, torchvision_dataset
from natlearn.data.splits import split_listing, split_note, split_record
from natlearn.data.stream import StreamingFolder
from natlearn.errors import NatlearnError
from natlearn.progress import progress_enabled

if TYPE_CHECKING:
    from natlearn.config import Config

__all__ = [
    "ImageData",
    "ImageDataset",
    "ImageRows",
    "DATASETS",
    "load_dataset",
    "load_split",
    "pretraining_data",
    "require_labels",
    "subset_indices",
]

# Folders whose decoded images would exceed this stream from disk instead (data_mode=auto).
MEMORY_LIMIT_BYTES = 4 * 2**30


@runtime_checkable
class ImageData(Protocol):
    """What training and evaluation read from a data set, in memory (:class:`ImageDataset`) or
    streamed from disk (:class:`~natlearn.data.stream.StreamingFolder`)."""

    labels: torch.Tensor | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_note: str
    files: list[Path] | None  # a folder's image files, one per index; None for named data sets
    # A folder split's natlearn.data.splits.split_record (None for named data sets): stored with a
    # run, so evaluation can check that it scores the test split pre-training left out.
    split_record: dict | None

    def __len__(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    @property
    def may_drop(self) -> bool:
        """Whether :meth:`batches` may deliver fewer images than asked for (unreadable ones left
        out)."""
        ...

    def subset(self, indices: torch.Tensor) -> ImageData:
        """The images at ``indices``, with the whole set's mean and std."""
        ...

    def batches(
        self, batch_ids: Sequence[torch.Tensor], device: torch.device, workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(ids, images)`` per batch of ``batch_ids`` on ``device``: images (b, C, H, W) uint8.
        A stream with ``on_bad_image=skip`` may deliver fewer ids than asked for."""
        ...

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images (n, C, H, W) at ``indices``, on the CPU (a stream decodes them now)."""
        ...


class ImageRows:
    """The images of ``rows`` of a data set, read when indexed: what a figure shows of a few of a
    streamed folder's images without decoding it whole. ``images[i]`` (an int or 0-dim tensor) is
    row ``rows[i]``'s uint8 (C, H, W) image; ``images[ids]`` (a 1-dim tensor) stacks them."""

    def __init__(self, data: ImageData, rows: torch.Tensor):
        self.data, self.rows = data, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int | torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index)
        images = self.data.read(self.rows[index.reshape(-1)])
        return images if index.dim() else images[0]


def require_labels(dataset: ImageData, purpose: str) -> torch.Tensor:
    """The labels of ``dataset``, or a one-line NatlearnError naming the fix when it is unlabelled
    or holds unlabelled images (label -1, e.g. stl10's ``unlabeled`` images). ``purpose``: who
    needs them."""
    if dataset.labels is None:
        raise NatlearnError(
            f"{purpose} needs labels, but {dataset.split_note} is unlabelled; "
            "put the images in one sub-folder per class"
        )
    unlabelled = int((dataset.labels < 0).sum())
    if unlabelled:
        raise NatlearnError(
            f"{purpose} needs labels, but {unlabelled:,} of the {len(dataset):,} images of "
            f"{dataset.split_note} are unlabelled; use a labelled split (train_split=train)"
        )
    return dataset.labels


def _folder(
    path: Path,
    split: str,
    image_size: int,
    on_bad_image: BadImagePolicy,
    cache: bool,
    mode: DataMode,
    seed: int,
    test_fraction: float,
) -> ImageData:
    folder_split = split_listing(path, split, seed, test_fraction)
    whole, part = folder_split.whole, folder_split.part
    record = split_record(path, split, folder_split, seed, test_fraction)
    size = image_size or first_image_size(whole)  # the whole folder's: one size for every split

    def note(count: int, total: int) -> str:
        return split_note(path, split, folder_split.layout, seed, test_fraction, count, total)

    if mode == "stream" or (
        mode == "auto" and len(whole.files) * 3 * size * size > MEMORY_LIMIT_BYTES
    ):
        return StreamingFolder(
            part,
            size,
            on_bad_image,
            split_note=note(len(part.files), len(whole.files)),
            split_record=record,
        )
    # The whole folder is decoded (and cached) once; a split takes its rows, so train and test share
    # one cache file.
    decoded = decode_folder(whole, size, on_bad_image, default_cache_dir() if cache else None)
    images, labels = decoded["images"], decoded["labels"]
    files = [whole.root / name for name in decoded["files"]]
    total = len(images)
    if part is not whole:
        wanted = {str(f.relative_to(whole.root)) for f in part.files}
        rows = torch.tensor(
            [i for i, name in enumerate(decoded["files"]) if name in wanted], dtype=torch.int64
        )
        if not len(rows):
            raise NatlearnError(
                f"the {split} split of {path} has no readable image; "
                "add images or change test_fraction"
            )
        images, labels = images[rows], labels[rows]
        files = [files[i] for i in rows.tolist()]
    return ImageDataset.from_images(
        images,
        labels if whole.classes else None,
        whole.classes,
        note(len(images), total),
        files,
        record,
    )


def load_dataset(
    name: str,
    split: str = "train",
    root: str = "",
    image_size: int = 0,
    download: bool = False,
    on_bad_image: BadImagePolicy = "error",
    cache: bool = True,
    mode: DataMode = "auto",
    seed: int = 0,
    test_fraction: float = 0.2,
) -> ImageData:
    """A data set by name or folder path.

    Args:
        name: ``digits`` (scikit-learn's bundled 8x8 digits, fixed 2/3 train, 1/3 test split),
            ``synthetic`` (10,000 random image_size images, default 256, random labels, and 2,000
            others as its test split: for speed benchmarks), a torchvision name (cifar10,
            cifar100, mnist, fashion-mnist, svhn, stl10), or a folder of images: a folder with
            ``train/`` and ``test/`` sub-folders (like ../shared/data/cifar10) picks ``split``;
            otherwise class sub-folders give labels and ``test_fraction`` of each class is held out
            as the test split (train = the rest, all = every image), and a flat folder is
            unlabelled (train and all = every image, no test split).
        split: train, test, all (digits, folders), extra (svhn), unlabeled, train+unlabeled (stl10).
        root: torchvision root of a named data set (default ``./data``).
        image_size: side that folder images are resized (short side) and centre-cropped to; 0 = the
            first image's short side. Smaller images are upscaled.
        download: let torchvision download a named data set that is not under ``root``.
        on_bad_image: ``error`` (stop at the first unreadable file) or ``skip`` (warn once, listing
            them all).
        cache: keep decoded folder images in a cache file ($NATLEARN_CACHE or ~/.cache/natlearn).
        mode: folders only: ``memory`` decodes every image once, ``stream`` reads them from disk
            each epoch with DataLoader workers, ``auto`` streams when the decoded images would pass
            4 GiB.
        seed: class folders without train/ and test/: seeds the held-out test split (with the
            class index).
        test_fraction: class folders without train/ and test/: fraction of each class held out for
            testing.
    """
    if name == "digits":
        if split not in ("train", "test", "all"):
            raise NatlearnError(f"digits has no split {split!r}; choose train, test or all")
        return digits(split)
    if name == "synthetic":
        return synthetic(split, image_size)
    if name in TORCHVISION:
        return torchvision_dataset(name, split, root or "data", download)
    path = Path(name)
    if not path.exists():
        raise NatlearnError(
            f"unknown data set {name!r}: not a folder and not one of: {', '.join(DATASETS)}"
        )
    return _folder(path, split, image_size, on_bad_image, cache, mode, seed, test_fraction)


def load_split(config: Config, split: str) -> ImageData:
    """The data set ``config`` names, for ``split`` (``"pretrain"``: the split pre-training reads,
    :meth:`~natlearn.config.Config.pretrain_split`)."""
    split = config.pretrain_split() if split == "pretrain" else split
    return load_dataset(
        config.data,
        split,
        config.data_root,
        config.image_size,
        config.download,
        config.on_bad_image,
        config.cache,
        config.data_mode,
        seed=config.split_seed,
        test_fraction=config.test_fraction,
    )


def pretraining_data(config: Config) -> ImageData:
    """The images ``config`` pre-trains on: its training split, or a seeded random ``subset`` of
    it."""
    with progress_enabled(config.progress):  # progress=false: decoding a folder is quiet too
        data = load_split(config, "pretrain")
    config.resolve(data.image_size, len(data))
    if not config.subset:
        return data
    return data.subset(subset_indices(config, len(data)))


def subset_indices(config: Config, images: int) -> torch.Tensor:
    """The sorted indices of the ``subset`` a run pre-trains on, out of a split of ``images``
    (seeded by ``seed``: an experiment can hold the other images out)."""
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, images]).generate_state(1)[0])
    )
    return torch.randperm(images, generator=generator)[: config.subset].sort().values
