"""What a config leaves to the data and the machine (:class:`Resolved`, from
:meth:`~natlearn.config.Config.resolve`), and the one device resolver (:func:`resolve_device`) that
training, evaluation and the probes share. Imports torch only when a device is looked up, so a
command's ``--help`` stays torch-free."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from natlearn.choices import Precision
from natlearn.errors import NatlearnError

if TYPE_CHECKING:
    import torch

__all__ = ["Resolved", "resolve_device"]


@dataclass(frozen=True)
class Resolved:
    """What a config leaves to the data and the machine, worked out once by
    :meth:`~natlearn.config.Config.resolve`.

    Attributes:
        loss: square or softmax (``loss=auto``: square for nat, softmax cross-entropy for
            supervised).
        train_split: the split pre-training reads (``train_split=auto`` resolved; stl10 adds its
            unlabelled images).
        crop_size: side of the training crop and of the evaluation view.
        n: images pre-trained on (``subset`` applied); None outside training.
        k: number of NAT targets (``k=None``: n); None outside training.
        device: the torch device training runs on (looked up when first read: a checkpoint trained
            on a GPU still resolves on a machine without one).
        precision: fp32 or bf16 (``precision=auto``: bf16 on GPUs).
    """

    loss: Literal["square", "softmax"]
    train_split: str
    crop_size: int
    n: int | None
    k: int | None
    device_name: str = "auto"
    precision_name: Precision = "auto"
    local_rank: int | None = None  # under torchrun: this process's GPU

    @functools.cached_property
    def device(self) -> torch.device:
        return resolve_device(self.device_name, self.local_rank)

    @functools.cached_property
    def precision(self) -> Literal["fp32", "bf16"]:
        bf16 = self.precision_name == "bf16" or (
            self.precision_name == "auto" and self.device.type == "cuda"
        )
        return "bf16" if bf16 else "fp32"


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` (the GPU when one is visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a
    one-line error otherwise. Under torchrun (``local_rank`` given) a GPU device is this process's
    ``cuda:LOCAL_RANK``."""
    import torch

    device = _named_device(name)
    return (
        torch.device("cuda", local_rank)
        if device.type == "cuda" and local_rank is not None
        else device
    )


def _named_device(name: str) -> torch.device:
    import torch

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
