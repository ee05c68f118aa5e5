"""Which torch device a step runs on (one resolver for training, evaluation and the probes), and how
the network runs there: bf16 autocast, channels-last layout, torch.compile, DDP."""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from natlearn.errors import NatlearnError

__all__ = ["autocast", "memory_format", "resolve_device", "step_model"]


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` (the GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a
    one-line error otherwise. Under torchrun (``local_rank`` given) a GPU device is this process's
    ``cuda:LOCAL_RANK``."""
    device = _named_device(name)
    return (
        torch.device("cuda", local_rank)
        if device.type == "cuda" and local_rank is not None
        else device
    )


def _named_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NatlearnError(
            f"device={name} asked for, but no CUDA GPU is visible; use device=cpu or device=auto"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise NatlearnError(
            f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None


def memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    """Channels-last on GPUs when asked (faster bf16 convolutions); CPUs keep the contiguous
    layout."""
    return (
        torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the network when ``precision`` is bf16; the loss and the assignment stay
    fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step_model(
    model: torch.nn.Module, device: torch.device, channels_last: bool, compile: bool, ddp: bool
) -> torch.nn.Module:
    """What a training step calls: ``model`` in ``memory_format``, wrapped in DDP when several ranks
    train, compiled when asked. ``model`` itself stays the plain network that checkpoints save."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = (
            True  # fixed input sizes: cuDNN picks the fastest kernels once
        )
    if memory_format(device, channels_last) == torch.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = model
    if ddp:
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(wrapped) if compile else wrapped
