"""Losses of Noise As Targets: the paper's square loss and a softmax variant for its ablation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the choice's values; at run time this module imports torch alone
    from natlearn.choices import Reduction


__all__ = ["square_loss", "softmax_loss"]


def square_loss(
    outputs: torch.Tensor, targets: torch.Tensor, reduction: Reduction | Literal["none"] = "mean"
) -> torch.Tensor:
    """||outputs - targets||^2 per row, reduced over the batch.

    For unit vectors this equals 2 - 2 cos(outputs, targets). Call it with the targets *after* the
    batch's re-assignment (computing it on the stale targets is a known porting bug).

    Args:
        outputs: (b, d) L2-normalised network outputs.
        targets: (b, d) the targets assigned to those rows.
        reduction: ``"mean"`` over rows, ``"sum"`` (the official Lua code; scales the gradient by
            b), or ``"none"`` (the (b,) per-row losses).
    Returns:
        scalar tensor, or (b,) with ``reduction="none"``.
    """
    per_row = (outputs - targets).pow(2).sum(dim=1)
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def softmax_loss(
    outputs: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    reduction: Reduction | Literal["none"] = "mean",
) -> torch.Tensor:
    """Cross-entropy of cosine logits ``outputs @ candidates.T / temperature`` against ``labels``.

    With ``candidates`` the batch's assigned targets and ``labels = arange(b)``, each image must
    pick its own target among the batch's: the softmax counterpart of :func:`square_loss`.

    Args:
        outputs: (b, d) L2-normalised outputs.
        candidates: (c, d) unit vectors.
        labels: (b,) int64 indices into ``candidates``.
        temperature: softmax temperature (> 0).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (the (b,) per-row losses).
    Returns:
        scalar tensor, or (b,) with ``reduction="none"``.
    """
    return F.cross_entropy(outputs @ candidates.T / temperature, labels, reduction=reduction)
