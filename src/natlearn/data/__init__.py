"""Data: data sets by name or folder (uint8 tensors, decoded once) and batch augmentation."""

from natlearn.data.augment import Augmentation, center_crop, eval_view
from natlearn.data.datasets import (
    DATASETS,
    ImageData,
    ImageDataset,
    ImageRows,
    load_dataset,
    load_split,
    pretraining_data,
    require_labels,
    subset_indices,
)
from natlearn.data.indexed import IndexedDataset
from natlearn.data.stream import StreamingFolder

__all__ = [
    "DATASETS",
    "Augmentation",
    "ImageData",
    "ImageDataset",
    "ImageRows",
    "IndexedDataset",
    "StreamingFolder",
    "center_crop",
    "eval_view",
    "load_dataset",
    "load_split",
    "pretraining_data",
    "require_labels",
    "subset_indices",
]
