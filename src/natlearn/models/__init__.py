"""Models: the frozen input layer, the paper's AlexNet-BN, a small conv net, torchvision's ResNets,
any timm network (``arch=timm:NAME``), and the NAT head.

Two ways to get a network: :func:`initial_model` (what a run starts from: the config's network for a
data set, initialised from ``config.seed``) and :func:`build_model` (the same shape from a
checkpoint's stored :func:`network_spec`, before its weights are loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from natlearn.models.input import InputLayer
from natlearn.models.network import Head, Network, alexnet_bn, small_convnet
from natlearn.models.registry import arch_spec

if TYPE_CHECKING:
    from natlearn.config import Config
    from natlearn.data import ImageData

__all__ = [
    "Head",
    "InputLayer",
    "Network",
    "alexnet_bn",
    "build_model",
    "feature_layers",
    "initial_model",
    "network_spec",
    "small_convnet",
]


def network_spec(data: ImageData, crop_size: int) -> dict:
    """What, besides the config, fixes a network's shape: stored in checkpoints to rebuild it."""
    return {
        "channels": data.channels,
        "image_size": crop_size,
        "num_classes": len(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
    }


def build_model(config: Config, spec: dict) -> Network:
    """The network ``config`` trains, for a :func:`network_spec`: a unit-norm ``dim`` output, or
    class logits for the supervised cross-entropy baseline, through the ``head`` the config names.
    Parameters are drawn from the global torch RNG."""
    logits = (
        config.objective == "supervised" and config.resolve(spec["image_size"]).loss == "softmax"
    )
    input_layer = InputLayer(
        config.input, spec["channels"], spec.get("mean", (0.5,)), spec.get("std", (0.25,))
    )
    out_dim = spec["num_classes"] if logits else config.dim
    build = arch_spec(config.arch).build
    network = build(
        config.arch, input_layer, out_dim, spec["image_size"], config.widths, not logits
    )
    if config.head == "mlp":
        # Drawn after the trunk: at one seed, head=linear and head=mlp start from the same trunk.
        network.head = Head(
            network.head.in_features, out_dim, not logits, config.head_widths, config.head_dropout
        )
    return network


def initial_model(config: Config, data: ImageData) -> Network:
    """The network ``config`` trains on ``data``, initialised from ``config.seed`` (as a run
    starts)."""
    torch.manual_seed(config.seed)
    return build_model(config, network_spec(data, config.resolve(data.image_size).crop_size))


def feature_layers(arch: str, widths: Sequence[int] = (32, 64, 128, 128)) -> list[str]:
    """The layer names :meth:`Network.features` accepts for a network of ``arch`` (without building
    it; a timm one is built without weights): its conv blocks or stages, ``neck`` and ``head``."""
    return [*arch_spec(arch).stages(arch, widths), "neck", "head"]
