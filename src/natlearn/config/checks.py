"""What a config refuses, each in one line naming the field and the fix: a field's value on its own
(:func:`check_values`, for :meth:`~natlearn.config.Config.validate`) and a training run's sizes
against its data and ranks (:func:`training_sizes`, for :meth:`~natlearn.config.Config.resolve`).
Reads a config's fields by name; imports no config, so the schema can import it."""

from __future__ import annotations

from collections.abc import Mapping

from natlearn.choices import ARCH_TIMM_PREFIX, timm_model_name
from natlearn.errors import NatlearnError

__all__ = ["AT_LEAST", "check_values", "training_sizes"]

AT_LEAST = {
    "image_size": 0,
    "crop_size": 0,
    "crop_padding": 0,
    "workers": 0,
    "dim": 1,
    "k": 1,
    "num_clusters": 1,
    "reassign_every": 0,
    "spare_targets": 0,
    "assign_block": 0,
    "subset": 0,
    "epochs": 1,
    "batch_size": 2,
    "weight_decay": 0.0,
    "warmup_epochs": 0,
    "seed": 0,
    "split_seed": 0,
    "keep_last": 1,
    "keep_every": 0,
    "checkpoint_every_steps": 0,
}
"""The smallest value of each numeric field (None, where a field allows it, passes)."""


def check_values(config, allowed: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a :class:`~natlearn.config.Config` with a choice outside what its field ``allowed``
    (arch: or a timm model), or numbers out of range or contradicting each other."""
    for name, values in allowed.items():
        if name == "arch" and str(config.arch).startswith(ARCH_TIMM_PREFIX):
            timm_model_name(config.arch)  # timm installed, and NAME one of its models
        elif values and getattr(config, name) not in values:
            open_choice = ", or timm:NAME (a timm model)" if name == "arch" else ""
            raise NatlearnError(
                f"{name}={getattr(config, name)!r} is not valid; "
                f"choose one of: {', '.join(values)}{open_choice}"
            )
    for name, low in AT_LEAST.items():
        value = getattr(config, name)
        if value is not None and value < low:
            raise NatlearnError(f"{name}={value} is too small; it must be >= {low}")
    for name in ("lr", "temperature"):
        if not getattr(config, name) > 0:
            raise NatlearnError(f"{name}={getattr(config, name)} must be > 0")
    if not 0 < config.test_fraction < 1:
        raise NatlearnError(f"test_fraction={config.test_fraction} must lie in (0, 1), e.g. 0.2")
    if not 0 < config.crop_scale <= 1:
        raise NatlearnError(f"crop_scale={config.crop_scale} must lie in (0, 1]")
    if not 0 <= config.color_jitter <= 1:
        raise NatlearnError(f"color_jitter={config.color_jitter} must lie in [0, 1] (SimCLR: 0.5)")
    if not 0 <= config.grayscale <= 1:
        raise NatlearnError(f"grayscale={config.grayscale} is a probability: give 0..1")
    if not 0 <= config.momentum < 1:
        raise NatlearnError(f"momentum={config.momentum} must lie in [0, 1)")
    if not config.widths or min(config.widths) < 1:
        raise NatlearnError(
            f"widths={config.widths} must be a non-empty list of positive channel counts"
        )
    if not config.head_widths or min(config.head_widths) < 1:
        raise NatlearnError(
            f"head_widths={config.head_widths} must be a non-empty list of positive widths, "
            "e.g. [2048,2048]"
        )
    if not 0 <= config.head_dropout < 1:
        raise NatlearnError(f"head_dropout={config.head_dropout} must lie in [0, 1) (official 0.5)")
    if config.warmup_epochs >= max(config.epochs, 1) and config.warmup_epochs:
        raise NatlearnError(
            f"warmup_epochs={config.warmup_epochs} must be smaller than epochs={config.epochs}"
        )
    if (
        config.targets == "discrete"
        and config.num_clusters is not None
        and config.num_clusters > config.dim
    ):
        raise NatlearnError(
            f"num_clusters={config.num_clusters} cannot exceed dim={config.dim} (one-hot targets)"
        )


def training_sizes(config, images: int | None, world_size: int) -> tuple[int | None, int | None]:
    """(n, k) of a training run on ``images`` images over ``world_size`` ranks: the images it
    pre-trains on (``subset`` applied) and its number of targets; (None, None) outside training
    (``images`` None)."""
    if images is None:
        return None, None
    if config.subset > images:
        raise NatlearnError(
            f"subset={config.subset} is larger than the data set (n={images}); "
            "lower subset or set subset=0 (all)"
        )
    n = config.subset or images
    k = n if config.k is None else config.k
    if k < n:
        raise NatlearnError(
            f"k={k} is smaller than the number of images n={n}; "
            "NAT needs k >= n (or k=none for k=n)"
        )
    if config.spare_targets > k - n:
        raise NatlearnError(
            f"spare_targets={config.spare_targets} needs k >= n + spare_targets = "
            f"{n + config.spare_targets}, got k={k}"
        )
    if config.batch_size > n:
        raise NatlearnError(
            f"batch_size={config.batch_size} is larger than the data set (n={n}); lower batch_size"
        )
    if config.batch_size < 2 * world_size:
        raise NatlearnError(
            f"batch_size={config.batch_size} is the global batch: it needs at least 2 images "
            f"per rank ({world_size} ranks)"
        )
    return n, k
