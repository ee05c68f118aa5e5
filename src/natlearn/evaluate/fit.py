"""The mini-batch loop every trained probe shares: the linear probe's Adam heads, the MLP probe and
fine-tuning differ only in their model, optimizer, loss and how an epoch is cut into batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from natlearn.progress import steps

__all__ = ["Batching", "fit_minibatches"]

Batching = Literal["keep_last", "drop_last", "even"]
"""How a shuffled epoch is cut: batches of ``batch_size`` and a shorter last one (``keep_last``);
full batches only (``drop_last``: BatchNorm never sees a 1-row batch); or ceil(n / batch_size)
batches whose sizes differ by at most one (``even``)."""


def fit_minibatches(
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    batching: Batching = "keep_last",
    min_steps: int = 0,
    label: str | None = None,
    progress: bool = False,
) -> int:
    """Train with ``optimizer`` on ``batch_loss(batch)`` under a cosine schedule over every step.

    Each epoch shuffles ``rows`` (indices into the training data) with ``generator`` and cuts them
    by ``batching``; ``batch_loss`` moves a batch to where it is needed. Small data sets run more
    epochs, so that at least ``min_steps`` steps are taken.

    Returns:
        the number of optimizer steps taken.
    """
    per_epoch = len(rows) // batch_size if batching == "drop_last" else -(-len(rows) // batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    for _ in steps(range(epochs), label or "fit", enabled=progress, every=10.0, unit="epochs"):
        order = rows[torch.randperm(len(rows), generator=generator)]
        for batch in _cut(order, batching, per_epoch, batch_size):
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return epochs * per_epoch


def _cut(order: torch.Tensor, how: Batching, count: int, size: int) -> tuple[torch.Tensor, ...]:
    if how == "even":
        return torch.tensor_split(order, count)
    return order[: count * size].split(size)
