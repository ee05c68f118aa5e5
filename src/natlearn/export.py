"""Backbones out of a run: a plain state_dict (natlearn's keys, or a ResNet's torchvision keys) as
``.pt`` or ``.safetensors``, and a ``.safetensors`` export rebuilt from the file alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.models import Network, build_model
from natlearn.training.checkpoint import load_checkpoint, network_from_state

__all__ = [
    "BACKBONE_FIELDS",
    "EXPORT_SUFFIXES",
    "export_backbone",
    "load_backbone",
    "torchvision_state_dict",
]

EXPORT_SUFFIXES = (".pt", ".pth", ".safetensors")
# The config fields that fix a backbone's architecture (stored in a safetensors export).
BACKBONE_FIELDS = ("arch", "input", "widths", "dim", "objective", "loss")


def export_backbone(checkpoint: str | Path, out: str | Path, format: str = "natlearn") -> Path:
    """Write the backbone (input layer, conv blocks, neck; no NAT head) as a plain state_dict file:
    safetensors when ``out`` ends in ``.safetensors``, a ``torch.save`` file for ``.pt``/``.pth``;
    other names and a missing folder are refused (NatlearnError).

    Either loads in code that does not import natlearn (``torch.load(out, weights_only=True)`` or
    ``safetensors.torch.load_file(out)``); keys are the module paths of
    :class:`natlearn.models.Network` (``input.sobel``, ``convs.conv1.0.weight``, ...; for
    ``arch=timm:NAME``, ``convs.body.`` + the keys of timm's ``features_only`` model), or with
    ``format="torchvision"`` a ResNet's torchvision keys (:func:`torchvision_state_dict`).
    """
    out = Path(out)
    if out.suffix not in EXPORT_SUFFIXES:
        raise NatlearnError(
            f"cannot export to {out}: unknown extension {out.suffix or '(none)'!r}; "
            "end the name in .pt or .pth (torch.save state_dict) or .safetensors"
        )
    if not out.parent.is_dir():
        raise NatlearnError(
            f"cannot export to {out}: folder {out.parent} does not exist; "
            "create it or choose another --out"
        )
    state = load_checkpoint(checkpoint)
    model = network_from_state(state)
    backbone = {
        key: value.contiguous()
        for key, value in model.state_dict().items()
        if not key.startswith("head.")
    }
    if format == "torchvision":
        backbone = torchvision_state_dict(backbone, state["config"].get("arch", "small"))
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        # What rebuilds the network from the file alone (load_backbone): its architecture and
        # input layer (the config's network fields) and its shape (the checkpoint's network spec).
        network = {key: state["config"][key] for key in BACKBONE_FIELDS if key in state["config"]}
        spec = state["network"]
        metadata = {
            "format": "natlearn-backbone" if format == "natlearn" else "torchvision-state-dict",
            "config": json.dumps(network),
            "network": json.dumps(spec),
            # the input layer a torchvision model needs in front (README)
            "input": json.dumps(
                {"mode": model.input.mode, **{k: spec.get(k) for k in ("mean", "std")}}
            ),
        }
        atomic_write(out, lambda tmp: save_file(backbone, str(tmp), metadata=metadata))
    else:
        atomic_write(out, lambda tmp: torch.save(backbone, tmp))
    return out


def torchvision_state_dict(backbone: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """A ResNet backbone's weights under torchvision's keys (``conv1.weight``, ``bn1.*``,
    ``layer1.*`` ...): they load into ``torchvision.models.resnet18()`` (etc.) once its ``conv1``
    takes the input layer's channels (and, for images up to 64 px, its stem is the CIFAR one); only
    ``fc`` is missing. The input layer (normalisation, gray, Sobel) is not a torchvision module: the
    caller applies it (README)."""
    from natlearn.models.registry import ARCHS, arch_spec

    if not arch_spec(arch).torchvision:
        torchvision = [name for name, spec in ARCHS.items() if spec.torchvision]
        raise NatlearnError(
            f"--format torchvision needs a torchvision architecture ({', '.join(torchvision)}); "
            f"this checkpoint is arch={arch}: export it in natlearn's format"
        )
    renamed = {}
    for key, value in backbone.items():
        if key.startswith("convs.conv1.0."):
            renamed["conv1." + key.removeprefix("convs.conv1.0.")] = value
        elif key.startswith("convs.conv1.1."):
            renamed["bn1." + key.removeprefix("convs.conv1.1.")] = value
        elif key.startswith("convs.layer"):
            renamed[key.removeprefix("convs.")] = value
    return renamed


def load_backbone(path: str | Path) -> Network:
    """The backbone a ``.safetensors`` export holds, rebuilt from the file alone (no checkpoint, no
    config): the input layer, conv blocks or stages and neck with their weights, in eval mode on the
    CPU. Calling it maps (b, C, S, S) images in [0, 1] to the pooled (b, F) features;
    :meth:`Network.features` gives any stage's. A ``timm:NAME`` backbone needs timm installed."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise NatlearnError(
            f"cannot load a backbone from {path}: give a .safetensors file written by "
            "natlearn export (only it carries the architecture)"
        )
    with safe_open(str(path), framework="pt") as exported:
        metadata = exported.metadata() or {}
        weights = {key: exported.get_tensor(key) for key in exported.keys()}  # noqa: SIM118
    if metadata.get("format") != "natlearn-backbone" or "config" not in metadata:
        raise NatlearnError(
            f"{path} is not a natlearn backbone export with its architecture; "
            "re-export it with this natlearn: natlearn export CHECKPOINT --out NAME.safetensors"
        )
    config = Config.from_checkpoint(json.loads(metadata["config"]))
    model = build_model(config, json.loads(metadata["network"]))
    model.head = torch.nn.Identity()
    model.load_state_dict(weights)
    return model.eval()
