"""Models: the frozen input layer, the paper's AlexNet-BN, a small conv net, and the NAT head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from natlearn.models.input import INPUT_MODES, InputLayer
from natlearn.models.network import ALEXNET_CONVS, ARCHITECTURES, Head, Network, alexnet_bn, small_convnet

if TYPE_CHECKING:
    from natlearn.config import Config

__all__ = [
    "ARCHITECTURES", "INPUT_MODES", "Head", "InputLayer", "Network", "alexnet_bn", "build_network", "feature_layers", "network_for",
    "small_convnet",
]  # fmt: skip


def build_network(
    arch: str,
    input_mode: str,
    in_channels: int,
    image_size: int,
    out_dim: int,
    normalize: bool = True,
    widths: Sequence[int] = (32, 64, 128, 128),
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.25,),
) -> Network:
    """A network by architecture name; ``normalize=False`` gives a plain classifier head (logits)."""
    input_layer = InputLayer(input_mode, in_channels, mean, std)
    if arch == "small":
        return small_convnet(input_layer, out_dim, image_size, widths, normalize)
    if arch == "alexnet":
        return alexnet_bn(input_layer, out_dim, normalize, image_size)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def feature_layers(arch: str, widths: Sequence[int] = (32, 64, 128, 128)) -> list[str]:
    """The layer names :meth:`Network.features` accepts for a network of ``arch`` (without building it):
    its conv blocks, ``neck`` and ``head``."""
    convs = list(ALEXNET_CONVS) if arch == "alexnet" else [f"conv{i}" for i in range(1, len(widths) + 1)]
    return [*convs, "neck", "head"]


def network_for(
    config: Config, channels: int, image_size: int, num_classes: int, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.25,)
) -> Network:
    """The network a config trains on ``image_size`` inputs: a unit-norm ``dim`` output, or class logits
    for the supervised cross-entropy baseline. Parameters are drawn from the global torch RNG."""
    logits = config.objective == "supervised" and config.resolved_loss() == "softmax"
    return build_network(
        config.arch,
        config.input,
        channels,
        image_size,
        out_dim=num_classes if logits else config.dim,
        normalize=not logits,
        widths=config.widths,
        mean=mean,
        std=std,
    )
