"""Networks: frozen input layer -> named conv blocks -> neck -> head (linear or MLP, then L2
normalise)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.choices import Arch
from natlearn.errors import NatlearnError
from natlearn.models.input import InputLayer

__all__ = [
    "ALEXNET_CONVS",
    "ALEXNET_MIN_SIZE",
    "DEEPCLUSTER_POOLS",
    "Head",
    "Network",
    "alexnet_bn",
    "small_convnet",
]

# conv1 (11x11, stride 4) and three 3x3/2 max-pools: a smaller input leaves pool5 nothing to pool.
ALEXNET_MIN_SIZE = 63
ALEXNET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# DeepCluster's average pooling (kernel, stride, padding) of AlexNet's conv maps to ~9k dims.
DEEPCLUSTER_POOLS = {
    "conv1": (6, 6, 3),
    "conv2": (4, 4, 0),
    "conv3": (3, 3, 1),
    "conv4": (3, 3, 1),
    "conv5": (2, 2, 0),
}


class Head(nn.Module):
    """The layers between the probed features (the neck) and the targets: ``hidden`` (none for the
    linear head; for the official MLP head, fc-BN-ReLU blocks of ``widths``, dropout after the
    first), then a linear map to the output dimension, then (for NAT) L2 normalisation.

    Shapes: (b, in_features) -> (b, out_features), unit rows when ``normalize``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        normalize: bool = True,
        widths: Sequence[int] = (),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        blocks, width = [], in_features
        for i, hidden in enumerate(widths):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            if i == 0 and dropout:  # the official fc6 alone has dropout
                blocks.append(nn.Dropout(dropout))
            width = hidden
        # An empty Sequential holds no weights: a linear head keeps its checkpoint keys.
        self.hidden = nn.Sequential(*blocks)
        self.linear = nn.Linear(width, out_features)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.hidden(x))
        return F.normalize(y, dim=1) if self.normalize else y


class Network(nn.Module):
    """``head(neck(convs(input(x))))``. ``convs`` (the trunk) is either an ``nn.Sequential`` of
    named blocks ``conv1``, ``conv2``, ... (conv, BN, ReLU) with the max-pools between them as
    ``pool1``, ... (a conv layer's features are its block's output before pooling, the DeepCluster
    convention), or a module naming its own stages (``stage_names`` and ``named_outputs(x)``, e.g. a
    timm network: :class:`natlearn.models.timm_backbone.TimmStages`) whose ``forward`` returns the
    last one. ``backbone(x)`` is everything but the head: what a user transfers.
    """

    def __init__(
        self,
        input_layer: InputLayer,
        convs: nn.Module,
        neck: nn.Sequential,
        head: Head,
        arch: Arch | str = "small",
    ):
        super().__init__()
        self.input = input_layer
        self.convs = convs
        self.neck = neck
        self.head = head
        self.arch = arch

    @property
    def conv_names(self) -> list[str]:
        """The probed blocks, in order: conv blocks (``conv1``, ...), then ResNet stages
        (``layer1``, ...); or the trunk's own stage names (a timm network's ``stage1``, ...)."""
        if hasattr(self.convs, "stage_names"):
            return list(self.convs.stage_names)
        return [name for name in self.convs._modules if name.startswith(("conv", "layer"))]

    def _trunk_outputs(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, output) of each trunk block in order: every child of a Sequential trunk (pools
        included), or the stages of a trunk that names its own (``named_outputs``)."""
        if hasattr(self.convs, "named_outputs"):
            yield from self.convs.named_outputs(x)
            return
        for name, block in self.convs.named_children():
            x = block(x)
            yield name, x

    def backbone(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.convs(self.input(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations of the named layers: conv block names, ``"neck"`` (penultimate), ``"head"``.

        Shapes: conv layers (b, C, H, W); neck (b, F); head (b, d). Stops after the last layer
        asked for.
        """
        unknown = set(layers) - set(self.conv_names) - {"neck", "head"}
        if unknown:
            known = [*self.conv_names, "neck", "head"]
            raise ValueError(f"unknown layers {sorted(unknown)}; this network has {known}")
        out: dict[str, torch.Tensor] = {}
        wanted = set(layers)
        x = self.input(images)
        for name, output in self._trunk_outputs(x):
            x = output
            if name in wanted:
                out[name] = x
                if wanted <= out.keys():  # nothing deeper was asked for
                    return {layer: out[layer] for layer in layers}
        out["neck"] = self.neck(x)
        if "head" in wanted:
            out["head"] = self.head(out["neck"])
        return {layer: out[layer] for layer in layers}


def _conv_block(
    cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def small_convnet(
    input_layer: InputLayer,
    out_dim: int,
    image_size: int,
    widths: Sequence[int] = (32, 64, 128, 128),
    normalize: bool = True,
) -> Network:
    """3x3 conv-BN-ReLU blocks for 8x8 to ~64x64 images; a 2x2 max-pool follows each block but the
    last while the map is at least 4 pixels wide, then global average pooling.
    """
    blocks, size, cin = OrderedDict(), image_size, input_layer.out_channels
    for i, width in enumerate(widths, start=1):
        blocks[f"conv{i}"] = _conv_block(cin, width, 3, padding=1)
        if size >= 4 and i < len(widths):
            blocks[f"pool{i}"] = nn.MaxPool2d(2)
            size //= 2
        cin = width
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Network(
        input_layer, nn.Sequential(blocks), neck, Head(cin, out_dim, normalize), arch="small"
    )


def alexnet_bn(
    input_layer: InputLayer, out_dim: int, normalize: bool = True, image_size: int = 224
) -> Network:
    """The paper's AlexNet with BatchNorm for 224x224 input (conv1-5, fc6-7, fc8 -> out_dim).

    Raises NatlearnError for ``image_size`` < ALEXNET_MIN_SIZE, which it cannot process.
    """
    if image_size < ALEXNET_MIN_SIZE:
        raise NatlearnError(
            f"arch=alexnet needs images (or crop_size) of at least {ALEXNET_MIN_SIZE}x"
            f"{ALEXNET_MIN_SIZE} pixels, got {image_size}x{image_size}; "
            "use arch=small for small images, or a larger image_size (paper: 224)"
        )
    cin = input_layer.out_channels
    convs = nn.Sequential(
        OrderedDict(
            conv1=_conv_block(cin, 96, 11, stride=4, padding=2),
            pool1=nn.MaxPool2d(3, 2),
            conv2=_conv_block(96, 256, 5, padding=2),
            pool2=nn.MaxPool2d(3, 2),
            conv3=_conv_block(256, 384, 3, padding=1),
            conv4=_conv_block(384, 384, 3, padding=1),
            conv5=_conv_block(384, 256, 3, padding=1),
            pool5=nn.MaxPool2d(3, 2),
        )
    )
    neck = nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(6),
            flatten=nn.Flatten(),
            fc6=nn.Sequential(
                nn.Linear(256 * 6 * 6, 4096),
                nn.BatchNorm1d(4096),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
            ),
            fc7=nn.Sequential(nn.Linear(4096, 4096), nn.BatchNorm1d(4096), nn.ReLU(inplace=True)),
        )
    )
    return Network(input_layer, convs, neck, Head(4096, out_dim, normalize), arch="alexnet")
