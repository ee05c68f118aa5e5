"""A quick check of a network source: weighted k-NN on a fixed sample of a labelled folder, the
number a packaged backbone's model card gives and the package's tests hold it to
(:mod:`natlearn.zoo`)."""

from __future__ import annotations

from pathlib import Path

import torch

from natlearn.data import load_split
from natlearn.evaluate.features import network_features
from natlearn.evaluate.probes.knn import knn_classify
from natlearn.evaluate.sources import load_source
from natlearn.training.checkpoint import evaluation_config, network_from_state

__all__ = ["CHECK_EVERY", "check_sample_knn"]

# The fixed sample: every 5th image of the train split (the k-NN's bank) and of the test split (its
# queries), in the folder's sorted order.
CHECK_EVERY = 5


def check_sample_knn(source: str, data: str | Path, k: int = 20) -> float:
    """Weighted ``k``-NN top-1 of a network source's pooled (neck) features on the fixed check
    sample of the labelled folder ``data`` (train/ and test/ inside): every :data:`CHECK_EVERY`-th
    train image as the bank, every :data:`CHECK_EVERY`-th test image scored, centre crops at the
    size the network trained at, on the CPU. ``source``: a checkpoint or ``pretrained:NAME``. A
    few seconds where the whole CIFAR-10 test set takes a minute."""
    state = load_source(source)
    config = evaluation_config(state, [f"data={data}", "device=cpu"])[0]
    model = network_from_state(state)
    splits = [load_split(config, split) for split in ("train", "test")]
    crop_size = config.resolve(splits[0].image_size).crop_size
    (bank, bank_y), (queries, query_y) = (
        (
            network_features(model, split.images[::CHECK_EVERY], ["neck"], crop_size)[0]["neck"],
            split.labels[::CHECK_EVERY],
        )
        for split in splits
    )
    return knn_classify(bank, bank_y, queries, query_y, k, device=torch.device("cpu")).top1
