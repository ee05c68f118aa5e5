"""natlearn: Noise As Targets (Bojanowski & Joulin, ICML 2017) in PyTorch.

The method lives in :mod:`natlearn.nat`, its core three modules usable in any training loop:
:mod:`natlearn.nat.targets` (fixed noise targets regenerated from their index),
:mod:`natlearn.nat.assignment` (the image -> target permutation and its in-batch Hungarian
re-assignment), :mod:`natlearn.nat.loss` (square loss, softmax variant); :class:`NATLoss` holds all
three as one loss module, and :class:`IndexedDataset` gives any data set the ``(image, index)``
pairs it needs.

The names below are imported on first use (PEP 562), so ``import natlearn`` and ``natlearn --help``
do not pay for torch and scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natlearn.lazy import lazy_exports
from natlearn.version import __version__ as __version__

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from natlearn.config import Config, apply_overrides
    from natlearn.data.indexed import IndexedDataset
    from natlearn.errors import NatlearnError
    from natlearn.export import load_backbone
    from natlearn.hub import Backbone
    from natlearn.nat.assignment import Assignment, ReassignResult
    from natlearn.nat.loss import softmax_loss, square_loss
    from natlearn.nat.module import NATLoss
    from natlearn.nat.targets import NoiseTargets
    from natlearn.presets import load_preset
    from natlearn.training.trainer import TrainResult, train
    from natlearn.zoo import pretrained

# public name -> the module that defines it
_LAZY = {
    "Assignment": "natlearn.nat.assignment",
    "Backbone": "natlearn.hub",
    "ReassignResult": "natlearn.nat.assignment",
    "Config": "natlearn.config",
    "IndexedDataset": "natlearn.data.indexed",
    "NatlearnError": "natlearn.errors",
    "load_backbone": "natlearn.export",
    "pretrained": "natlearn.zoo",
    "softmax_loss": "natlearn.nat.loss",
    "square_loss": "natlearn.nat.loss",
    "NATLoss": "natlearn.nat.module",
    "apply_overrides": "natlearn.config",
    "load_preset": "natlearn.presets",
    "NoiseTargets": "natlearn.nat.targets",
    "TrainResult": "natlearn.training.trainer",
    "train": "natlearn.training.trainer",
}

__all__ = [
    "Assignment",
    "Backbone",
    "Config",
    "IndexedDataset",
    "NATLoss",
    "NatlearnError",
    "NoiseTargets",
    "ReassignResult",
    "TrainResult",
    "apply_overrides",
    "load_backbone",
    "load_preset",
    "pretrained",
    "softmax_loss",
    "square_loss",
    "train",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
