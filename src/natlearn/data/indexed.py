"""Any map-style data set as ``(sample, index)`` pairs: NAT needs each image's index to know which
target it holds, and torchvision's data sets yield ``(image, label)``."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

__all__ = ["IndexedDataset"]


class IndexedDataset(Dataset):
    """``dataset[i]`` as ``(sample, i)``: the sample alone (a ``(sample, label)`` pair drops its
    label, which NAT never reads), then its index.

    Example::

        data = IndexedDataset(torchvision.datasets.ImageFolder(root, transform))
        for images, ids in DataLoader(data, batch_size=256, shuffle=True):
            loss = nat_loss(model(images), ids, epoch)
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self.dataset[index]
        return (item[0] if isinstance(item, tuple) else item), index
