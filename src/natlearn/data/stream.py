"""Large-image folders, read from disk every epoch by DataLoader workers.

Workers only decode and resize (deterministic, no randomness, no NAT state: they see image indices,
never the assignment); the random crop and flip happen on the whole batch in the main process, with
the same code as for in-memory data sets.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from natlearn.choices import BadImagePolicy
from natlearn.data.folder import FolderListing, no_readable_image, try_decode
from natlearn.errors import NatlearnError

__all__ = ["StreamingFolder"]


class StreamingFolder(Dataset):
    """A folder too large to decode into memory; ``dataset[i] -> (uint8 (3, size, size), i)``.

    A file that cannot be decoded comes back as a zero image with index ``-1 - i``, so the main
    process can stop naming it (``on_bad_image=error``) or drop it from the batch (``skip``).
    ``split_note`` says where the images came from (default: the listing's folder);
    ``split_record``, which folder split they are (:func:`natlearn.data.splits.split_record`).
    """

    def __init__(
        self,
        listing: FolderListing,
        size: int,
        on_bad_image: BadImagePolicy = "error",
        stats_sample: int = 512,
        split_note: str = "",
        split_record: dict | None = None,
    ):
        self.listing, self.size, self.on_bad_image = listing, size, on_bad_image
        self.split_note = split_note or str(listing.root)
        self.split_record = split_record
        self.labels = torch.tensor(listing.labels, dtype=torch.int64) if listing.classes else None
        self.classes = listing.classes
        self._reported: set[int] = set()
        picks = np.linspace(
            0, len(listing.files) - 1, min(stats_sample, len(listing.files))
        ).astype(int)
        sample = [a for a in (try_decode(listing.files[i], size) for i in picks) if a is not None]
        if not sample:
            raise no_readable_image(
                listing.root, listing.files[picks[0]], len(picks), sampled_from=len(listing.files)
            )
        pixels = np.stack(sample).reshape(-1, 3) / 255.0
        self.mean = tuple(float(v) for v in pixels.mean(axis=0))
        self.std = tuple(max(float(v), 1e-3) for v in pixels.std(axis=0))

    def __len__(self) -> int:
        return len(self.listing.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = try_decode(self.listing.files[index], self.size)
        if array is None:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1 - index
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), index

    @property
    def channels(self) -> int:
        return 3

    @property
    def files(self) -> list[Path]:
        """The image files, one per index."""
        return self.listing.files

    def subset(self, indices: torch.Tensor) -> StreamingFolder:
        """The files at ``indices`` (keeps the full folder's mean/std)."""
        picked = copy.copy(self)
        chosen = indices.tolist()
        files, labels = (
            [self.listing.files[i] for i in chosen],
            [self.listing.labels[i] for i in chosen],
        )
        picked.listing = dataclasses.replace(self.listing, files=files, labels=labels)
        picked.labels = None if self.labels is None else self.labels[indices]
        picked.split_note = f"{self.split_note}; a subset of {len(chosen)} of them"
        picked._reported = set()
        return picked

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices`` (n, 3, size, size), decoded now in this process: the few
        a figure shows. An unreadable one is a one-line error naming it."""
        arrays = []
        for index in indices.tolist():
            array = try_decode(self.listing.files[index], self.size)
            if array is None:
                raise NatlearnError(
                    f"{self.listing.files[index]} is not a readable image; remove it"
                )
            arrays.append(torch.from_numpy(array).permute(2, 0, 1))
        return torch.stack(arrays) if arrays else torch.zeros(0, 3, self.size, self.size)

    @property
    def may_drop(self) -> bool:
        return self.on_bad_image == "skip"

    @property
    def image_size(self) -> int:
        return self.size

    def batches(
        self, batch_ids: Sequence[torch.Tensor], device: torch.device, workers: int = 2
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(ids, uint8 images on device)`` for each batch of ids, decoded by ``workers``
        processes."""
        loader = DataLoader(
            self,
            batch_sampler=[ids.tolist() for ids in batch_ids],
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )
        for images, ids in loader:
            bad = ids < 0
            if bool(bad.any()):
                images, ids = self._handle_bad(images, ids, bad)
            yield ids, images.to(device, non_blocking=True)

    def _handle_bad(
        self, images: torch.Tensor, ids: torch.Tensor, bad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        indices = (-1 - ids[bad]).tolist()
        if self.on_bad_image == "error":
            raise NatlearnError(
                f"{self.listing.files[indices[0]]} is not a readable image; "
                "remove it or set on_bad_image=skip"
            )
        new = [i for i in indices if i not in self._reported]
        if new:
            self._reported.update(new)
            warnings.warn(
                f"skipped unreadable file(s): {', '.join(str(self.listing.files[i]) for i in new)}",
                stacklevel=3,
            )
        return images[~bad], ids[~bad]
