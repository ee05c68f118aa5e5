"""Data sets as uint8 tensors in memory, and random crop + flip applied to whole batches.

A training data set yields ``(image, index)``: the index is how NAT finds the image's target.
Labels are kept beside the images, only for evaluation and supervised baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from natlearn.errors import NatlearnError

__all__ = ["ImageDataset", "load_dataset", "augment", "center_crop", "DATASETS"]

DATASETS = ("digits", "folder path (class sub-folders, optionally under train/ and test/)")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImageDataset:
    """Images decoded once into memory.

    Attributes:
        images: (n, C, H, W) uint8.
        labels: (n,) int64 class ids, or None for unlabelled data.
        classes: class names (index = label).
        mean, std: per-channel statistics of the images in [0, 1], for the input layer.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def _with_stats(images: torch.Tensor, labels: torch.Tensor | None, classes: list[str]) -> ImageDataset:
    as_float = images.double().div_(255)
    mean = tuple(as_float.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-3) for s in as_float.std(dim=(0, 2, 3)).tolist())
    return ImageDataset(images, labels, classes, mean, std)


def _digits(split: str) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    # One fixed stratified split (1/3 test) so every run and baseline scores the same images.
    train_idx, test_idx = train_test_split(np.arange(len(images)), test_size=1 / 3, random_state=0, stratify=digits.target)
    idx = {"train": train_idx, "test": test_idx, "all": np.arange(len(images))}[split]
    classes = [str(c) for c in range(10)]
    return _with_stats(torch.from_numpy(images[idx]), torch.from_numpy(digits.target[idx]).long(), classes)


def _open_rgb(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise NatlearnError(f"cannot read image {path}: {error}; remove or replace the file") from None


def _decode(path: Path, size: int) -> np.ndarray:
    """An RGB uint8 (size, size, 3) array: short side resized to ``size``, then centre-cropped."""
    from PIL import Image

    image = _open_rgb(path)
    if image.size != (size, size):
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def _folder(root: Path, image_size: int) -> ImageDataset:
    if not root.is_dir():
        raise NatlearnError(f"data folder {root} does not exist; give an existing folder of images")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs:
        files = [(f, label) for label, d in enumerate(subdirs) for f in sorted(d.rglob("*")) if f.suffix.lower() in _IMAGE_SUFFIXES]
        classes: list[str] = [d.name for d in subdirs]
    else:
        files = [(f, -1) for f in sorted(root.iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
        classes = []
    if not files:
        raise NatlearnError(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found in {root}")
    if image_size == 0:
        image_size = min(_open_rgb(files[0][0]).size)
    images = np.stack([_decode(f, image_size) for f, _ in files]).transpose(0, 3, 1, 2)
    labels = torch.tensor([label for _, label in files]) if classes else None
    return _with_stats(torch.from_numpy(np.ascontiguousarray(images)), labels, classes)


def load_dataset(name: str, split: str = "train", root: str = "", image_size: int = 0) -> ImageDataset:
    """A data set by name or folder path.

    Args:
        name: ``"digits"`` (scikit-learn's bundled 8x8 digits, fixed 2/3 train, 1/3 test split) or a
            folder of images: class sub-folders give labels, a flat folder is unlabelled; a folder
            with ``train/`` and ``test/`` sub-folders (like ../shared/data/cifar10) picks ``split``.
        split: ``"train"``, ``"test"`` or ``"all"`` (digits only).
        root: base folder that ``name`` is relative to, when it is a path.
        image_size: side images of a folder are resized and centre-cropped to (0 = the first image's).
    """
    if split not in ("train", "test", "all"):
        raise NatlearnError(f"split={split!r} is not valid; choose train, test or all")
    if name == "digits":
        return _digits(split)
    path = Path(root) / name if root else Path(name)
    if not path.exists():
        raise NatlearnError(f"unknown data set {name!r}: not a folder; valid names: {', '.join(DATASETS)}")
    if (path / "train").is_dir() and (path / "test").is_dir():
        path = path / ("test" if split == "test" else "train")
    return _folder(path, image_size)


def augment(images: torch.Tensor, size: int, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """The paper's augmentation on a whole batch: random crop (after zero padding) and horizontal flip.

    Args:
        images: (b, C, H, W) uint8, on any device.
        size: side of the output crop (<= H + 2 * padding).
        padding: zero pixels added on each side before cropping.
        flip: flip each image horizontally with probability 1/2.
        generator: CPU generator; the same seed gives the same crops on any device.
    Returns:
        (b, C, size, size) float32 in [0, 1] on the images' device.
    """
    b, c = images.shape[:2]
    x = F.pad(images, (padding,) * 4) if padding else images
    height, width = x.shape[-2:]
    if size > min(height, width):
        raise NatlearnError(f"crop size {size} is larger than the padded image ({height}x{width}); lower image_size")
    top = torch.randint(0, height - size + 1, (b, 1), generator=generator)
    left = torch.randint(0, width - size + 1, (b, 1), generator=generator)
    flips = torch.rand(b, 1, generator=generator) < 0.5
    span = torch.arange(size)
    rows = top + span
    cols = left + span
    if flip:
        cols = torch.where(flips, cols.flip(1), cols)
    dev = images.device
    batch = torch.arange(b, device=dev)[:, None, None, None]
    channel = torch.arange(c, device=dev)[None, :, None, None]
    out = x[batch, channel, rows.to(dev)[:, None, :, None], cols.to(dev)[:, None, None, :]]
    return out.float().div_(255)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation transform: a deterministic centre crop, as float32 in [0, 1]."""
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size].float().div_(255)
