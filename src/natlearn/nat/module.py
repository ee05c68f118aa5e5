"""Noise As Targets as one loss module for any training loop (in lightly's manner).

nat_loss = NATLoss(num_images=len(dataset), dim=128)
for epoch in range(epochs):
    for images, ids in loader:  # IndexedDataset: (image, index) pairs
        loss = nat_loss(model(images), ids, epoch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.choices import Reduction, TargetKind
from natlearn.nat.objective import NoiseAsTargets
from natlearn.training.distributed import Ranks

__all__ = ["NATLoss"]


class NATLoss(nn.Module):
    """The targets, the image -> target assignment and the re-assignment schedule in one module:
    ``nat_loss(outputs, ids, epoch)`` re-assigns the batch's targets among its images in the epochs
    that do (``epoch % reassign_every == 0``; the paper's Hungarian step), then returns the loss to
    the targets the images hold now.

    Under torchrun (``torch.distributed`` initialised, every rank with its own batch) the module
    gathers the global batch itself: rank 0 solves its assignment and the other ranks replay it,
    and each rank's loss is scaled so that DDP's gradient average is the one-process gradient of
    the global batch. Its ``state_dict`` holds the assignment: save and load it with the model's to
    resume.

    Args:
        num_images: n, the size of the data set; ``ids`` index it.
        dim: d, the dimension of the outputs and of the targets.
        reassign_every: re-assign in epochs where ``epoch % reassign_every == 0`` (the paper: 3);
            0 = never.
        k: number of targets, k >= n (default n, the paper's); ``spare_targets`` of the k - n
            unassigned ones join each batch's problem.
        assign_block: solve a batch in blocks of at most this many images (0 = whole batch).
        loss: ``square`` (the paper's) or ``softmax`` (cross-entropy over the batch's targets at
            ``temperature``).
        reduction: ``mean`` over the batch, or ``sum`` (the official code).
        targets: ``sphere`` (the paper's) or ``discrete`` (one-hot, ``num_clusters`` of them).
        seed: fixes the targets and the initial assignment.
        normalize: L2-normalise the outputs here (leave it on unless the model already does).

    Shapes:
        outputs: (b, d) float; ids: (b,) int64 indices into the data set; returns a 0-dim loss.
    """

    def __init__(
        self,
        num_images: int,
        dim: int,
        reassign_every: int = 3,
        k: int | None = None,
        spare_targets: int = 0,
        assign_block: int = 0,
        loss: str = "square",
        reduction: Reduction = "mean",
        temperature: float = 0.1,
        targets: TargetKind = "sphere",
        num_clusters: int | None = None,
        seed: int = 0,
        normalize: bool = True,
    ):
        super().__init__()
        self.normalize = normalize
        self.nat = NoiseAsTargets(
            num_images,
            dim,
            k=k,
            seed=seed,
            targets=targets,
            num_clusters=num_clusters,
            reassign_every=reassign_every,
            spare_targets=spare_targets,
            assign_block=assign_block,
            loss=loss,
            reduction=reduction,
            temperature=temperature,
            ranks=Ranks.current(),
        )
        self.statistics: dict[str, torch.Tensor] = {}  # the last call's loss and cosine (on device)

    def forward(self, outputs: torch.Tensor, ids: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.normalize:
            outputs = F.normalize(outputs, dim=1)
        rows = self.nat.ranks.rows_of(len(ids), outputs.device)
        if self.nat.reassigns(epoch):
            self.nat.reassign(ids, outputs.detach(), rows)
        loss, self.statistics = self.nat.loss(ids, outputs, rows)
        return loss

    def get_extra_state(self) -> dict[str, Any]:
        return self.nat.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.nat.load_state_dict(state)
