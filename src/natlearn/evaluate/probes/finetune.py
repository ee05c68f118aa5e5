"""Full fine-tuning as a protocol: every layer of a copy of the network trained on the labels, a
fresh linear classifier on top, scored on the test split's centre crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from natlearn.data import Augmentation, ImageDataset, center_crop
from natlearn.evaluate.fit import tuned_copy
from natlearn.evaluate.probes.linear import ProbeResult, topk_accuracy
from natlearn.models import Network

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
