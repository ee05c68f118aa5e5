"""How the network runs on the device a step runs on: bf16 autocast, channels-last layout,
torch.compile, DDP. Which device that is: :func:`natlearn.config.resolve_device` (one resolver for
training, evaluation and the probes)."""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

__all__ = ["autocast", "memory_format", "step_model"]


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
