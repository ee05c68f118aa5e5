"""Data: data sets by name or folder (uint8 tensors, decoded once) and batch augmentation."""

from natlearn.data.augment import CROPS, augment, center_crop, eval_view
from natlearn.data.datasets import DATA_MODES, DATASETS, SPLITS, ImageData, ImageDataset, load_dataset, require_labels
from natlearn.data.stream import StreamingFolder

__all__ = [
    "CROPS", "DATASETS", "DATA_MODES", "SPLITS", "ImageData", "ImageDataset", "StreamingFolder", "augment", "center_crop", "eval_view", "load_dataset",
    "require_labels",
]  # fmt: skip
