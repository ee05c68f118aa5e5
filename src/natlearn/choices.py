"""The allowed values of every choice field of :class:`~natlearn.config.Config`, as ``Literal``
types: modules take these types and trust a validated Config. A leaf module (it imports nothing of
natlearn but :mod:`natlearn.errors`), so data/, models/ and the method can name a choice without
importing the config schema.

``arch`` also takes any ``ARCH_TIMM_PREFIX`` + timm model name (``timm:convnext_atto``): an open
choice, checked against timm by :func:`timm_model_name`, not a Literal value.

An evaluation's source is a checkpoint or one of the baselines named here (:data:`BASELINES`).
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

from natlearn.errors import NatlearnError

__all__ = [
    "ARCH_TIMM_PREFIX",
    "Arch",
    "BASELINES",
    "BadImagePolicy",
    "Crop",
    "DataMode",
    "HAND_CRAFTED",
    "HeadKind",
    "InputMode",
    "LoggerKind",
    "LossKind",
    "NO_NETWORK",
    "NonfinitePolicy",
    "ObjectiveName",
    "Precision",
    "RANDOM_INIT",
    "RAW_PIXELS",
    "Reduction",
    "Schedule",
    "TargetKind",
    "TrainSplit",
    "timm_model_name",
]

TrainSplit = Literal["auto", "train", "test", "all", "extra", "unlabeled", "train+unlabeled"]
Crop = Literal["pad", "resized", "none"]
BadImagePolicy = Literal["error", "skip"]
DataMode = Literal["auto", "memory", "stream"]
InputMode = Literal["rgb", "gray", "sobel"]
Arch = Literal["small", "alexnet", "resnet18", "resnet34", "resnet50"]
HeadKind = Literal["linear", "mlp"]
ARCH_TIMM_PREFIX = "timm:"
ObjectiveName = Literal["nat", "supervised"]
TargetKind = Literal["sphere", "discrete"]
LossKind = Literal["auto", "square", "softmax"]
Reduction = Literal["mean", "sum"]
Schedule = Literal["constant", "cosine", "step"]
Precision = Literal["auto", "fp32", "bf16"]
NonfinitePolicy = Literal["stop", "skip"]
LoggerKind = Literal["none", "tensorboard", "csv", "wandb"]

RANDOM_INIT, RAW_PIXELS, HAND_CRAFTED = "random-init", "raw-pixels", "hand-crafted"
NO_NETWORK = (RAW_PIXELS, HAND_CRAFTED)
"""Sources without a network: features computed from the images alone."""
BASELINES = (RANDOM_INIT, *NO_NETWORK)
"""The sources ``natlearn eval``, ``compare`` and ``transfer`` take besides checkpoints."""


def timm_model_name(arch: str) -> str:
    """The timm model ``arch=timm:NAME`` names, checked: NatlearnError (one line) when timm is not
    installed or NAME is no timm model. timm is imported here, when such an arch is checked, never
    at natlearn import (it takes seconds, and is an optional extra)."""
    name = arch.removeprefix(ARCH_TIMM_PREFIX)
    try:
        import timm
    except ImportError:
        raise NatlearnError(
            f"arch={arch} needs timm, which is not installed: pip install 'natlearn[timm]'"
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(ARCH_TIMM_PREFIX + c for c in close)}? " if close else ""
        family = re.match(r"[a-z]*", name.lower()).group()  # resnet19 -> *resnet*
        raise NatlearnError(
            f"arch={arch}: {name!r} is not a timm model; {hint}list them with "
            f"python -c \"import timm; print(timm.list_models('*{family}*'))\""
        )
    return name
