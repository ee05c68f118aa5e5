"""NaN and inf during training: detected before the optimizer steps, then the run stops with one
line (``on_nonfinite=stop``) or skips the batch (``on_nonfinite=skip``) while the weights are still
finite."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.training.distributed import Ranks

__all__ = ["NonFiniteBatch", "check_finite", "largest_gradient", "stop_or_skip", "weights_finite"]


class NonFiniteBatch(Exception):
    """A batch produced NaN/inf ``what`` (outputs, loss or gradients) before the optimizer
    stepped."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def check_finite(what: str, value: torch.Tensor, ranks: Ranks | None = None) -> None:
    """Raise NonFiniteBatch unless ``value`` is finite (on every rank, when ``ranks`` is given;
    gradients are the same on every rank once DDP has all-reduced them, so they need no
    collective)."""
    bad = not bool(torch.isfinite(value).all())
    if ranks.any(bad) if ranks is not None else bad:
        raise NonFiniteBatch(what)


def largest_gradient(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().abs().amax() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).amax() if grads else torch.zeros(())


def weights_finite(model: torch.nn.Module) -> bool:
    """Parameters and floating-point buffers (BatchNorm running statistics, which evaluation uses)
    are finite."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return bool(torch.isfinite(torch.stack([t.detach().abs().amax() for t in tensors])).all())


def stop_or_skip(
    config: Config,
    what: str,
    epoch: int,
    step: int,
    last_path: Path | None,
    recoverable: bool = True,
) -> None:
    """Stop the run with a one-line error, unless ``on_nonfinite=skip`` and the weights are still
    finite (then the batch is skipped; once the weights or BatchNorm statistics are broken every
    later batch would be too)."""
    if config.on_nonfinite == "stop" or not recoverable:
        where = f"last good checkpoint: {last_path}" if last_path else "no checkpoint written yet"
        broken = (
            ""
            if recoverable
            else (
                " (the weights or BatchNorm statistics are no longer finite, "
                "so skipping cannot continue)"
            )
        )
        raise NatlearnError(
            f"non-finite {what} (NaN or inf) at epoch {epoch + 1}, step {step + 1}{broken}; "
            f"{where}; lower lr, check the data, or set on_nonfinite=skip"
        )
    warnings.warn(
        f"skipping batch {step + 1} of epoch {epoch + 1}: non-finite {what}", stacklevel=3
    )
