"""Data: data sets by name or folder (uint8 tensors, decoded once) and batch augmentation."""

from natlearn.data.augment import CROPS, augment, center_crop
from natlearn.data.datasets import DATA_MODES, DATASETS, SPLITS, ImageDataset, load_dataset
from natlearn.data.stream import StreamingFolder

__all__ = ["CROPS", "DATASETS", "DATA_MODES", "SPLITS", "ImageDataset", "StreamingFolder", "augment", "center_crop", "load_dataset"]
