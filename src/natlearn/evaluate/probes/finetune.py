"""Full fine-tuning as a protocol: every layer of a copy of the network trained on the labels, a
fresh linear classifier on top, scored on the test split's centre crops."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from natlearn.data import Augmentation, ImageData, ImageDataset, center_crop
from natlearn.errors import NatlearnError
from natlearn.evaluate.fit import tuned_copy
from natlearn.evaluate.probes.linear import topk_accuracy
from natlearn.evaluate.probes.settings import ProbeResult
from natlearn.models import Network

if TYPE_CHECKING:
    from natlearn.evaluate.probes.protocols import Inputs
    from natlearn.evaluate.probes.settings import EvalSettings

__all__ = ["finetune"]


def finetune(
    model: Network,
    train_set: ImageDataset,
    test_set: ImageDataset,
    crop_size: int,
    epochs: int,
    progress: bool = False,
    lr: float = 0.01,
    flip: bool = True,
) -> ProbeResult:
    """Full fine-tuning: a copy of the network with a fresh linear classifier, every layer trained
    on the labels with random crops (and flips when ``flip``; data whose orientation carries meaning
    turns them off) (SGD, momentum 0.9, cosine), scored on centre crops."""
    device = next(model.parameters()).device
    augmentation = Augmentation(crop_size, "pad", max(1, crop_size // 8), flip=flip)

    def loss(outputs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, train_set.labels[ids].to(device))

    tuned = tuned_copy(
        model, len(train_set.classes), train_set.images, loss, augmentation, epochs, lr, progress
    )
    with torch.inference_mode():
        scores = torch.cat(
            [
                tuned(center_crop(chunk.to(device), crop_size)).cpu()
                for chunk in test_set.images.split(512)
            ]
        )
    top1, top5 = topk_accuracy(scores, test_set.labels)
    return ProbeResult(top1, top5)


# The protocol (natlearn.evaluate.probes.protocols): it trains the network, so it runs after the
# frozen-feature probes, alone, and reads no layer's features.


def describe(settings: EvalSettings, network: Network | None) -> str | None:
    if not settings.finetune_epochs or network is None:
        return None
    return f"fine-tuning {settings.finetune_epochs} epochs"


def check(settings: EvalSettings, train_set: ImageData, test_set: ImageData) -> None:
    if settings.finetune_epochs and not all(
        isinstance(data, ImageDataset) for data in (train_set, test_set)
    ):
        raise NatlearnError(
            "fine-tuning trains on images in memory, but the data is streamed from disk "
            "(data_mode=stream, or a folder over 4 GiB decoded); drop --finetune, or set "
            "data_mode=memory if the decoded folder fits in memory"
        )


def train(inputs: Inputs) -> dict[str, ProbeResult]:
    settings = inputs.settings
    if not settings.finetune_epochs or inputs.network is None:
        return {}
    tuned = finetune(
        inputs.network,
        inputs.train_set,
        inputs.test_set,
        inputs.crop_size,
        settings.finetune_epochs,
        settings.progress,
        flip=settings.flip,
    )
    return {"all": tuned}
