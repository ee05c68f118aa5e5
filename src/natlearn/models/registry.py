"""Every architecture natlearn builds, by name: what a run, an evaluation, a transfer and an export
need to know of it, in one :class:`ArchSpec`. A new backbone is a module that builds it and one
line in :data:`ARCHS` (and its name in :data:`natlearn.choices.Arch`, which the config checks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from natlearn.choices import timm_model_name
from natlearn.models.input import InputLayer
from natlearn.models.network import (
    ALEXNET_CONVS,
    DEEPCLUSTER_POOLS,
    Network,
    alexnet_bn,
    small_convnet,
)
from natlearn.models.resnet import RESNET_STAGES, resnet
from natlearn.models.timm_backbone import (
    is_timm_arch,
    timm_fixed_input_size,
    timm_network,
    timm_stage_names,
)

__all__ = ["ARCHS", "ArchSpec", "TIMM", "arch_spec"]

Build = Callable[[str, InputLayer, int, int, Sequence[int], bool], Network]
"""``build(arch, input_layer, out_dim, image_size, widths, normalize)``: the network, its
parameters drawn from the global torch RNG."""


@dataclass(frozen=True)
class ArchSpec:
    """What natlearn knows of an architecture.

    Attributes:
        build: the network (:data:`Build`).
        stages: ``stages(arch, widths)``: its conv blocks or stages in order, the layers a probe
            reads besides ``neck`` (without building it).
        transfer_size: the side VOC images are resized to by default (0: the training crop size).
        mlp_hidden: the width of the MLP probe's hidden layers (the paper's fc6-7 on AlexNet).
        pools: fixed average pools (kernel, stride, padding) of some layers' maps for the probes
            (DeepCluster's AlexNet table); other layers are pooled by a rule.
        torchvision: its weights export under torchvision's keys (``--format torchvision``).
        fixed_input_size: ``fixed_input_size(arch)``: it takes one input size only.
    """

    build: Build
    stages: Callable[[str, Sequence[int]], Sequence[str]]
    transfer_size: int = 0
    mlp_hidden: int = 512
    pools: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    torchvision: bool = False
    fixed_input_size: Callable[[str], bool] = lambda arch: False


def _small(arch, input_layer, out_dim, image_size, widths, normalize) -> Network:
    return small_convnet(input_layer, out_dim, image_size, widths, normalize)


def _alexnet(arch, input_layer, out_dim, image_size, widths, normalize) -> Network:
    return alexnet_bn(input_layer, out_dim, normalize, image_size)


def _resnet(arch, input_layer, out_dim, image_size, widths, normalize) -> Network:
    return resnet(arch, input_layer, out_dim, image_size, normalize)


def _timm(arch, input_layer, out_dim, image_size, widths, normalize) -> Network:
    return timm_network(arch, input_layer, out_dim, image_size, normalize)


RESNET = ArchSpec(_resnet, lambda arch, widths: RESNET_STAGES, transfer_size=224, torchvision=True)

ARCHS: dict[str, ArchSpec] = {
    "small": ArchSpec(_small, lambda arch, widths: [f"conv{i}" for i in range(1, len(widths) + 1)]),
    "alexnet": ArchSpec(
        _alexnet,
        lambda arch, widths: ALEXNET_CONVS,
        transfer_size=224,
        mlp_hidden=4096,
        pools=DEEPCLUSTER_POOLS,
    ),
    "resnet18": RESNET,
    "resnet34": RESNET,
    "resnet50": RESNET,
}
"""The named architectures (:data:`natlearn.choices.Arch`)."""

TIMM = ArchSpec(
    _timm,
    lambda arch, widths: timm_stage_names(arch),
    fixed_input_size=lambda arch: timm_fixed_input_size(timm_model_name(arch)),
)
"""Any timm model, ``arch=timm:NAME``: its feature levels as stages."""


def arch_spec(arch: str) -> ArchSpec:
    """The spec of ``arch``: a name of :data:`ARCHS`, or ``timm:NAME``."""
    return TIMM if is_timm_arch(arch) else ARCHS[arch]
