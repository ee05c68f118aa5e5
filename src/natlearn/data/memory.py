"""Data sets decoded once into memory: one uint8 tensor, moved to the training device once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["ImageDataset"]


@dataclass
class ImageDataset:
    """Images decoded once into memory.

    Attributes:
        images: (n, C, H, W) uint8.
        labels: (n,) int64 class ids (-1 for unlabelled images), or None for an unlabelled data set.
        classes: class names (index = label).
        mean, std: per-channel statistics of the images in [0, 1], for the input layer.
        split_note: where the images came from (which split of what), for evaluation reports.
        files: a folder's image files, one per row (None for named data sets).
        split_record: a folder split's :func:`natlearn.data.splits.split_record` (None for named
            data sets).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_note: str = ""
    files: list[Path] | None = None
    split_record: dict | None = None
    _on_device: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_images(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        classes: list[str],
        split_note: str,
        files: list[Path] | None = None,
        split_record: dict | None = None,
    ) -> ImageDataset:
        """A data set of ``images``, with their channel statistics."""
        return cls(
            images.contiguous(),
            labels,
            classes,
            *_channel_stats(images),
            split_note=split_note,
            files=files,
            split_record=split_record,
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def may_drop(self) -> bool:
        return False  # decoded up front: every image is there

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        """The images at ``indices``, with the whole set's mean and std (the input layer's)."""
        labels = None if self.labels is None else self.labels[indices]
        note = f"{self.split_note}; a subset of {len(indices)} of them"
        files = None if self.files is None else [self.files[i] for i in indices.tolist()]
        return ImageDataset(
            self.images[indices].contiguous(),
            labels,
            self.classes,
            self.mean,
            self.std,
            note,
            files,
            self.split_record,
        )

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices``."""
        return self.images[indices]

    def batches(
        self, batch_ids: Sequence[torch.Tensor], device: torch.device, workers: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(ids, uint8 images on device)`` for each batch of ids; the images are moved to
        the device once, then batches are gathered there (``workers`` is unused: nothing to
        decode)."""
        if self._on_device is None or self._on_device.device != device:
            self._on_device = self.images.to(device)
        for ids in batch_ids:
            yield ids, self._on_device[ids.to(device)]


def _channel_stats(
    images: torch.Tensor, sample: int = 10_000
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1], on an evenly spaced sample (exact for small data sets)."""
    step = max(1, len(images) // sample)
    as_float = images[::step].double().div_(255)
    mean = tuple(as_float.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-3) for s in as_float.std(dim=(0, 2, 3)).tolist())
    return mean, std
