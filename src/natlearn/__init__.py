"""natlearn: Noise As Targets (Bojanowski & Joulin, ICML 2017) in PyTorch.

The core is three modules usable in any training loop: :mod:`natlearn.targets` (fixed noise targets
regenerated from their index), :mod:`natlearn.assignment` (the image -> target permutation and its
in-batch Hungarian re-assignment), :mod:`natlearn.loss` (square loss, softmax variant);
:class:`NATLoss` holds all three as one loss module, and :class:`IndexedDataset` gives any data set
the ``(image, index)`` pairs it needs.
"""

from natlearn.assignment import Assignment, ReassignResult
from natlearn.config import Config
from natlearn.data.indexed import IndexedDataset
from natlearn.errors import NatlearnError
from natlearn.export import load_backbone
from natlearn.loss import softmax_loss, square_loss
from natlearn.nat_loss import NATLoss
from natlearn.presets import apply_overrides, load_preset
from natlearn.targets import NoiseTargets
from natlearn.train import TrainResult, train

__all__ = [
    "Assignment",
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
    "softmax_loss",
    "square_loss",
    "train",
]
__version__ = "0.1.0"
