"""Which torch device a step runs on: one resolver for training, evaluation and the probes."""

from __future__ import annotations

import torch

from natlearn.errors import NatlearnError

__all__ = ["resolve_device"]


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` (the GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a one-line error otherwise.
    Under torchrun (``local_rank`` given) a GPU device is this process's ``cuda:LOCAL_RANK``."""
    device = _named_device(name)
    return torch.device("cuda", local_rank) if device.type == "cuda" and local_rank is not None else device


def _named_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NatlearnError(f"device={name} asked for, but no CUDA GPU is visible; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NatlearnError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
