"""The data sets natlearn knows by name: scikit-learn's bundled digits (the embedded default),
synthetic images for throughput benchmarks, and torchvision's own classes (``download=True`` is the
path a user with internet takes; an existing torchvision root is read as is)."""

from __future__ import annotations

import numpy as np
import torch

from natlearn.data.memory import ImageDataset
from natlearn.errors import NatlearnError

__all__ = ["DATASETS", "TORCHVISION", "digits", "synthetic", "torchvision_dataset"]

# name -> (torchvision class name, splits it offers)
TORCHVISION = {
    "cifar10": ("CIFAR10", ("train", "test")),
    "cifar100": ("CIFAR100", ("train", "test")),
    "mnist": ("MNIST", ("train", "test")),
    "fashion-mnist": ("FashionMNIST", ("train", "test")),
    "svhn": ("SVHN", ("train", "test", "extra")),
    "stl10": ("STL10", ("train", "test", "unlabeled", "train+unlabeled")),
}
DATASETS = ("digits", "synthetic", *TORCHVISION)
SYNTHETIC_IMAGES = 10_000
SYNTHETIC_TEST_IMAGES = 2_000


def digits(split: str) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (no download), as ``split``: train, test or all."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    # One fixed stratified split (1/3 test) so every run and baseline scores the same images.
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=1 / 3, random_state=0, stratify=digits.target
    )
    idx = {"train": train_idx, "test": test_idx, "all": np.arange(len(images))}[split]
    note = {
        "train": "digits: fixed stratified 2/3 train split",
        "test": "digits: fixed stratified 1/3 test split",
        "all": "digits: all 1,797 images (train and test)",
    }[split]
    return ImageDataset.from_images(
        torch.from_numpy(images[idx]),
        torch.from_numpy(digits.target[idx]).long(),
        [str(c) for c in range(10)],
        note,
    )


def synthetic(split: str, image_size: int) -> ImageDataset:
    """Random RGB images with random labels over 1,000 classes: throughput benchmarks, no download,
    no disk. The test split is its own 2,000 images (another seed); every other split is the 10,000
    training images."""
    size = image_size or 256
    test = split == "test"
    count, seed = (SYNTHETIC_TEST_IMAGES, 1) if test else (SYNTHETIC_IMAGES, 0)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 1000, (count,), generator=generator)
    note = f"synthetic: {count:,} random {'test' if test else 'training'} images (seed {seed})"
    return ImageDataset(
        images, labels, [str(c) for c in range(1000)], (0.5,) * 3, (0.29,) * 3, note
    )


def torchvision_dataset(name: str, split: str, root: str, download: bool) -> ImageDataset:
    """A torchvision data set by natlearn's name for it (:data:`TORCHVISION`), under ``root``."""
    import torchvision.datasets as tv

    class_name, splits = TORCHVISION[name]
    if split not in splits:
        raise NatlearnError(f"{name} has no split {split!r}; choose one of: {', '.join(splits)}")
    cls = getattr(tv, class_name)
    kwargs = {"split": split} if name in ("svhn", "stl10") else {"train": split == "train"}
    try:
        raw = cls(root, download=download, **kwargs)
    except RuntimeError as error:
        if "download=True" not in str(error) and "not found" not in str(error).lower():
            raise
        raise NatlearnError(
            f"{name} not found under data_root={root!r}; add download=true to fetch it "
            "(needs internet), or set data_root to the folder that already holds it"
        ) from None
    data = (
        raw.data if isinstance(raw.data, torch.Tensor) else torch.from_numpy(np.asarray(raw.data))
    )
    if data.dim() == 3:  # MNIST family: (n, H, W)
        data = data[:, None]
    elif data.shape[-1] == 3:  # CIFAR: (n, H, W, 3)
        data = data.permute(0, 3, 1, 2)
    labels = getattr(raw, "targets", None)
    if labels is None:
        labels = raw.labels
    classes = list(getattr(raw, "classes", None) or [str(c) for c in range(10)])
    return ImageDataset.from_images(
        data,
        torch.as_tensor(np.asarray(labels), dtype=torch.int64),
        classes,
        f"torchvision {class_name} {split} split",
    )
