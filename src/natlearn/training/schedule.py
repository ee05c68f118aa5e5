"""What an epoch's schedule is, from (config, epoch) alone so a resumed run replays it: its
learning rate, and the generator of its batch order and augmentation."""

from __future__ import annotations

import math

import numpy as np
import torch

from natlearn.config import Config

__all__ = ["epoch_generator", "learning_rate"]


def learning_rate(config: Config, epoch: int) -> float:
    """The lr of an epoch: linear warm-up, then constant, cosine, or step decay (stateless, so
    resumable)."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    progress = (epoch - config.warmup_epochs) / max(1, config.epochs - config.warmup_epochs)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.lr_schedule == "step":
        return config.lr * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return config.lr


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batch order and augmentation of an epoch depend on (seed, epoch) only: resumes replay
    them."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    )
