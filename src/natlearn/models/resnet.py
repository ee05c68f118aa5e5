"""torchvision's ResNets as natlearn networks: the same input layer, named stages and NAT head as
the paper's AlexNet, so training, evaluation and the figures treat them alike."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from natlearn.models.input import InputLayer
from natlearn.models.network import Head, Network

__all__ = ["RESNET_STAGES", "SMALL_IMAGE_STEM", "resnet"]

RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
# Images up to this side get the CIFAR stem (3x3 stride-1 conv1, no max-pool): the ImageNet stem
# (7x7 stride-2 conv and a max-pool) would shrink a 32x32 image to 8x8 before the first stage.
SMALL_IMAGE_STEM = 64


def resnet(
    arch: str, input_layer: InputLayer, out_dim: int, image_size: int, normalize: bool = True
) -> Network:
    """A torchvision ResNet (``resnet18`` / ``resnet34`` / ``resnet50``) whose first conv takes the
    input layer's channels (rgb 3, gray 1, sobel 2), as natlearn's named blocks: ``conv1`` (the stem
    conv, BN, ReLU), ``pool1`` (its max-pool, large images only), ``layer1`` .. ``layer4``; the neck
    pools globally and the head maps the pooled features to ``out_dim``.

    Shapes: (b, C, S, S) -> (b, out_dim); the neck is (b, 512) for resnet18/34, (b, 2048) for 50.
    """
    import torchvision  # here, not at import: it takes over a second, and most runs never need it

    net = getattr(torchvision.models, arch)(weights=None)
    small = image_size <= SMALL_IMAGE_STEM
    stem = nn.Conv2d(
        input_layer.out_channels,
        64,
        kernel_size=3 if small else 7,
        stride=1 if small else 2,
        padding=1 if small else 3,
        bias=False,
    )
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
    blocks = OrderedDict(conv1=nn.Sequential(stem, net.bn1, net.relu))
    if not small:
        blocks["pool1"] = net.maxpool
    for name in RESNET_STAGES[1:]:
        blocks[name] = getattr(net, name)
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    features = net.fc.in_features
    return Network(
        input_layer, nn.Sequential(blocks), neck, Head(features, out_dim, normalize), arch
    )
