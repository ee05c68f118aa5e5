"""Any timm network as the NAT backbone (``arch=timm:NAME``): timm's ``features_only`` model behind
natlearn's input layer, its feature levels as the probed stages, then the same neck and NAT head as
the other networks. timm is imported when such a network is built or checked, never at natlearn
import (it takes seconds, and is an optional extra: ``pip install 'natlearn[timm]'``)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from natlearn.choices import ARCH_TIMM_PREFIX as TIMM_PREFIX
from natlearn.choices import timm_model_name
from natlearn.errors import NatlearnError
from natlearn.models.input import InputLayer
from natlearn.models.network import Head, Network

__all__ = [
    "TIMM_PREFIX",
    "TimmStages",
    "is_timm_arch",
    "timm_fixed_input_size",
    "timm_full_model_keys",
    "timm_network",
    "timm_stage_names",
]


def is_timm_arch(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


class TimmStages(nn.Module):
    """A timm ``features_only`` network as natlearn's trunk. Its feature levels, in order, are the
    stages ``stage1`` .. ``stageN``: stage i is the output of timm's module
    ``feature_info.module_name()[i - 1]`` (kept in :attr:`stage_modules`), e.g. for resnet18
    ``act1`` (the stem), ``layer1`` .. ``layer4``; for convnext ``stages.0`` .. ``stages.3``; for a
    ViT its last three blocks (``blocks.9`` .. ``blocks.11``), as patch-token maps.

    Attributes:
        body: the timm model; its weights are the state_dict's ``convs.body.*``.
        stage_names, stage_modules, channels: per stage, natlearn's name, timm's module, channels.
    Shapes:
        (b, C, S, S) -> each stage (b, C_i, H_i, W_i) (NCHW, also for timm's NHWC models such as
        Swin); ``forward`` returns the last stage's map.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        info = body.feature_info  # its channels() etc. list the levels returned, len() may list all
        self.stage_modules = tuple(info.module_name())
        self.stage_names = tuple(f"stage{i}" for i in range(1, len(self.stage_modules) + 1))
        self.channels = tuple(info.channels())
        self.nhwc = getattr(body, "output_fmt", "NCHW") == "NHWC"

    def named_outputs(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(stage name, its map) for every stage, in order."""
        for name, y in zip(self.stage_names, self.body(x), strict=True):
            yield name, y.permute(0, 3, 1, 2) if self.nhwc else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return list(self.named_outputs(x))[-1][1]

    def extra_repr(self) -> str:
        return f"stages={dict(zip(self.stage_names, self.stage_modules, strict=True))}"


def _first_line(error: BaseException) -> str:
    """timm's message, for one line of natlearn's."""
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def timm_fixed_input_size(name: str) -> bool:
    """Whether timm model ``name`` takes one input size only (ViTs, Swin, ...: timm's own rule,
    its pretrained config's ``fixed_input_size``)."""
    import timm

    config = timm.models.get_pretrained_cfg(name)
    return config is not None and bool(getattr(config, "fixed_input_size", False))


def _create(name: str, in_chans: int, image_size: int | None) -> nn.Module:
    """``timm.create_model(name, features_only=True, in_chans=...)``, with ``img_size`` for the
    models that fix their input size (:func:`timm_fixed_input_size`). Parameters are drawn from
    the global torch RNG."""
    import timm

    kwargs = {}
    if image_size and timm_fixed_input_size(name):
        kwargs["img_size"] = image_size
    return timm.create_model(
        name, pretrained=False, features_only=True, in_chans=in_chans, **kwargs
    )


def _features_model(name: str, in_chans: int, image_size: int | None) -> nn.Module:
    """:func:`_create`, or NatlearnError (one line) when timm cannot build it."""
    try:
        return _create(name, in_chans, image_size)
    except (RuntimeError, AssertionError, TypeError) as error:
        raise NatlearnError(
            f"arch=timm:{name}: timm cannot build it with features_only=True (the feature levels "
            f"natlearn probes): {_first_line(error)}; choose another timm model "
            "(e.g. timm:resnet18, timm:convnext_atto)"
        ) from None


def timm_full_model_keys(arch: str, in_chans: int, image_size: int) -> set[str]:
    """The state_dict keys of timm's own headless model ``arch=timm:NAME`` (``num_classes=0``), as
    :func:`natlearn.export.timm_state_dict` names a trunk's weights for it."""
    import timm

    name = timm_model_name(arch)
    kwargs = {"img_size": image_size} if timm_fixed_input_size(name) else {}
    with torch.device("meta"):
        model = timm.create_model(
            name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs
        )
    return set(model.state_dict())


def timm_stage_names(arch: str) -> list[str]:
    """The stage names of ``arch=timm:NAME`` (``stage1`` ..), without its weights: built on the meta
    device, or on the CPU for the few models whose construction needs real tensors."""
    name = timm_model_name(arch)
    try:
        with torch.device("meta"):
            body = _create(name, 3, None)
    except Exception:  # e.g. an operator without a meta kernel, or no features_only: the CPU says
        body = _features_model(name, 3, None)
    return list(TimmStages(body).stage_names)


def timm_network(
    arch: str, input_layer: InputLayer, out_dim: int, image_size: int, normalize: bool = True
) -> Network:
    """The timm network ``arch=timm:NAME`` (``pretrained=False``) taking the input layer's channels
    (rgb 3, gray 1, sobel 2) and ``image_size`` crops, as natlearn's trunk (:class:`TimmStages`);
    the neck pools the last stage globally and the head maps it to ``out_dim``.

    Raises NatlearnError (one line) when timm is missing, NAME is no timm model, timm has no
    ``features_only`` for it, or it cannot process ``image_size`` x ``image_size`` images (checked
    once with a forward pass in eval mode).

    Shapes: (b, C, S, S) -> (b, out_dim); the neck is (b, channels of the last stage).
    """
    name = timm_model_name(arch)
    trunk = TimmStages(_features_model(name, input_layer.out_channels, image_size))
    trunk.eval()
    try:
        with torch.no_grad():
            trunk(torch.zeros(1, input_layer.out_channels, image_size, image_size))
    except Exception as error:  # timm's own, e.g. a kernel larger than the map
        raise NatlearnError(
            f"arch={arch} cannot process {image_size}x{image_size} images (the crop size): "
            f"{_first_line(error)}; use larger images or crop_size, or arch=small for small images"
        ) from None
    finally:
        trunk.train()
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Network(
        input_layer, trunk, neck, Head(trunk.channels[-1], out_dim, normalize), arch=arch
    )
