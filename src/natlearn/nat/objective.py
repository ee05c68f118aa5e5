"""What a training step optimises: Noise As Targets, or the supervised baseline on the same network.

Both follow :class:`Objective`, so the training loop reads the same for either: re-assign the
batch's targets when the epoch calls for it, then take the loss to the (new) targets.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from natlearn.choices import Reduction, TargetKind
from natlearn.config import Config, choices
from natlearn.data import ImageData, require_labels
from natlearn.nat.assignment import Assignment, reassign_global_batch
from natlearn.nat.loss import softmax_loss, square_loss
from natlearn.nat.targets import NoiseTargets
from natlearn.training.distributed import Ranks

__all__ = ["Objective", "NoiseAsTargets", "Supervised", "objective_for"]

Rows = tuple[int, int]  # (first, total): this rank's rows of the global batch


class Objective(Protocol):
    """A training objective over image ids ``ids`` (b,) and the network's outputs (b, d) for them.

    ``rows = (first, total)`` places this rank's b images in the global batch of ``total`` (default
    ``(0, b)``: one process). Statistics are 0-dim tensors on the outputs' device, so a step never
    waits for the device to report them; ``statistics`` names what the run logs per epoch (a step
    that does not report one counts it as 0).
    """

    statistics: tuple[str, ...]

    def reassigns(self, epoch: int) -> bool:
        """Whether batches of ``epoch`` re-assign their targets before the loss."""
        ...

    def reassign(self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None) -> float:
        """Re-assign the global batch's targets; returns the fraction of it whose target changed."""
        ...

    def loss(
        self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This rank's loss (scaled so DDP's average gives the whole global batch's gradient) and
        statistics."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def check(self) -> None:
        """Full invariant check, once per epoch."""
        ...


def objective_for(
    config: Config, data: ImageData, ranks: Ranks | None = None
) -> NoiseAsTargets | Supervised:
    """The objective ``config`` trains with on ``data``."""
    if config.objective == "supervised":
        return Supervised(config, data, ranks)
    return NoiseAsTargets.from_config(config, len(data), ranks)


def rank_loss(
    per_row: torch.Tensor, reduction: str, ranks: Ranks, global_batch: int
) -> torch.Tensor:
    """Reduce this rank's per-row losses so that DDP's average over ranks gives the one-process
    gradient of the whole global batch: sum * N / B for ``mean``, sum * N for ``sum`` (exact for
    uneven shares)."""
    if ranks.world_size == 1:
        return per_row.sum() if reduction == "sum" else per_row.mean()
    scale = ranks.world_size / (global_batch if reduction == "mean" else 1)
    return per_row.sum() * scale


class NoiseAsTargets:
    """The NAT objective: every image holds one fixed random target, re-assigned within batches.

    Holds the fixed targets and the image -> target assignment (the only state that grows with n).
    """

    statistics = ("loss", "cosine", "reassigned", "assign_ms")

    def __init__(
        self,
        n: int,
        dim: int,
        k: int | None = None,
        seed: int = 0,
        targets: TargetKind = "sphere",
        num_clusters: int | None = None,
        reassign_every: int = 3,
        spare_targets: int = 0,
        assign_block: int = 0,
        loss: str = "square",
        reduction: Reduction = "mean",
        temperature: float = 0.1,
        ranks: Ranks | None = None,
    ):
        # A validated Config passes; built by hand (NATLoss, a user's loop), the choices are checked
        # here (k and spare_targets: Assignment).
        for name, value, allowed in (
            ("loss", loss, ("square", "softmax")),
            ("reduction", reduction, choices("loss_reduction")),
            ("targets", targets, choices("targets")),
        ):
            if value not in allowed:
                raise ValueError(
                    f"{name}={value!r} is not valid; choose one of: {', '.join(allowed)}"
                )
        k = n if k is None else k
        self.ranks = ranks or Ranks()
        self.targets = NoiseTargets(k, dim, seed=seed, kind=targets, num_clusters=num_clusters)
        self.assignment = Assignment(n, k, seed=seed, spare_targets=spare_targets)
        self.reassign_every, self.assign_block = reassign_every, assign_block
        self.loss_kind, self.reduction, self.temperature = loss, reduction, temperature

    @classmethod
    def from_config(cls, config: Config, n: int, ranks: Ranks | None = None) -> NoiseAsTargets:
        """The objective ``config`` trains ``n`` images with (k, the loss and the rest checked)."""
        resolved = config.resolve(images=n)
        return cls(
            n,
            config.dim,
            k=resolved.k,
            seed=config.seed,
            targets=config.targets,
            num_clusters=config.num_clusters,
            reassign_every=config.reassign_every,
            spare_targets=config.spare_targets,
            assign_block=config.assign_block,
            loss=resolved.loss,
            reduction=config.loss_reduction,
            temperature=config.temperature,
            ranks=ranks,
        )

    def reassigns(self, epoch: int) -> bool:
        return self.reassign_every > 0 and epoch % self.reassign_every == 0

    def reassign(self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None) -> float:
        """Hungarian re-assignment of the global batch (in ``assign_block`` blocks): each image
        takes the target, among those the batch holds, closest to its output under the one-to-one
        constraint."""
        return reassign_global_batch(
            self.assignment, self.targets, ids, outputs.detach(), self.ranks, self.assign_block
        )

    def loss(
        self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Square loss (or softmax over the global batch's targets) to the targets the images hold
        now; statistics: loss per image and cosine to the own target."""
        first, global_batch = rows or (0, len(ids))
        outputs = outputs.float()
        if self.loss_kind == "square":
            targets = self._held(ids, outputs.device)
            per_row = square_loss(outputs, targets, reduction="none")
        else:  # every image against every target of the global batch
            batch_targets = self._held(self.ranks.gather(ids.to(outputs.device)), outputs.device)
            mine = torch.arange(first, first + len(ids), device=outputs.device)
            targets = batch_targets[mine]
            per_row = softmax_loss(outputs, batch_targets, mine, self.temperature, reduction="none")
        loss = rank_loss(per_row, self.reduction, self.ranks, global_batch)
        return loss, {
            "loss": per_row.detach().mean(),
            "cosine": (outputs.detach() * targets).sum(dim=1).mean(),
        }

    def _held(self, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(b, d) the targets images ``ids`` hold."""
        return self.targets.lookup(self.assignment[ids], device)

    def state_dict(self) -> dict:
        return {"assignment": self.assignment.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.assignment.load_state_dict(state["assignment"])

    def check(self) -> None:
        self.assignment.check()
        self.ranks.check_identical(
            torch.cat([self.assignment.image_to_target, self.assignment.spare]),
            "image -> target assignment",
        )


class Supervised:
    """The same network trained on labels: cross-entropy on logits, or the square loss to fixed
    per-class sphere targets (the paper's softmax-vs-square ablation)."""

    statistics = ("loss", "train_accuracy")

    def __init__(self, config: Config, data: ImageData, ranks: Ranks | None = None):
        self.labels, self.ranks = require_labels(data, "objective=supervised"), ranks or Ranks()
        self.loss_kind, self.reduction = config.resolve().loss, config.loss_reduction
        self.class_targets = NoiseTargets(len(data.classes), config.dim, seed=config.seed)

    def reassigns(self, epoch: int) -> bool:
        return False  # labels are fixed

    def reassign(self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None) -> float:
        raise RuntimeError("a supervised objective has no targets to re-assign")

    def loss(
        self, ids: torch.Tensor, outputs: torch.Tensor, rows: Rows | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = self.labels[ids].to(outputs.device)
        outputs = outputs.float()
        if self.loss_kind == "square":
            per_row = square_loss(outputs, self.class_targets[labels], reduction="none")
            scores = (
                outputs.detach()
                @ self.class_targets[torch.arange(self.class_targets.k, device=outputs.device)].T
            )
        else:
            per_row = F.cross_entropy(outputs, labels, reduction="none")
            scores = outputs.detach()
        loss = rank_loss(per_row, self.reduction, self.ranks, (rows or (0, len(ids)))[1])
        return loss, {
            "loss": per_row.detach().mean(),
            "train_accuracy": (scores.argmax(dim=1) == labels).float().mean(),
        }

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def check(self) -> None:
        pass
