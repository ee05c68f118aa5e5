"""Backbones out of a run: a plain state_dict (natlearn's keys, or a ResNet's torchvision keys) as
``.pt`` or ``.safetensors``, or a Hugging Face Hub folder (``model.safetensors`` + ``config.json``,
what ``huggingface_hub``'s ``PyTorchModelHubMixin`` reads for :class:`natlearn.hub.Backbone`); a
``.safetensors`` file or a Hub folder is rebuilt from itself alone by :func:`load_backbone`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from natlearn.errors import NatlearnError
from natlearn.files import atomic_write, current_umask
from natlearn.models import Network
from natlearn.models.timm_backbone import is_timm_arch
from natlearn.training.checkpoint import backbone_network, load_checkpoint, network_from_state

__all__ = [
    "BACKBONE_FIELDS",
    "EXPORT_SUFFIXES",
    "HUB_CONFIG",
    "HUB_WEIGHTS",
    "backbone_network",
    "export_backbone",
    "hub_description",
    "load_backbone",
    "torchvision_state_dict",
]

EXPORT_SUFFIXES = (".pt", ".pth", ".safetensors")
# The config fields that fix a backbone's architecture (stored in a safetensors export).
BACKBONE_FIELDS = ("arch", "input", "widths", "dim", "objective", "loss")
# The Hugging Face Hub layout (PyTorchModelHubMixin's file names).
HUB_CONFIG, HUB_WEIGHTS = "config.json", "model.safetensors"
# A timm backbone's weights under timm's own keys, beside them.
TIMM_WEIGHTS = "timm/model.safetensors"
BACKBONE_FORMAT = "natlearn-backbone"


def export_backbone(checkpoint: str | Path, out: str | Path, format: str = "natlearn") -> Path:
    """Write the backbone (input layer, conv blocks, neck; no NAT head) as a plain state_dict file:
    safetensors when ``out`` ends in ``.safetensors``, a ``torch.save`` file for ``.pt``/``.pth``;
    with ``format="hf"``, ``out`` is a folder in the Hugging Face Hub's layout
    (:func:`write_hub_folder`). Other names and a missing parent folder are refused
    (NatlearnError).

    Either file loads in code that does not import natlearn (``torch.load(out, weights_only=True)``
    or ``safetensors.torch.load_file(out)``); keys are the module paths of
    :class:`natlearn.models.Network` (``input.sobel``, ``convs.conv1.0.weight``, ...; for
    ``arch=timm:NAME``, ``convs.body.`` + the keys of timm's ``features_only`` model), or with
    ``format="torchvision"`` a ResNet's torchvision keys (:func:`torchvision_state_dict`).
    """
    out = Path(out)
    if format != "hf" and out.suffix not in EXPORT_SUFFIXES:
        raise NatlearnError(
            f"cannot export to {out}: unknown extension {out.suffix or '(none)'!r}; "
            "end the name in .pt or .pth (torch.save state_dict) or .safetensors, "
            "or give a folder with --format hf"
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
    # What rebuilds the network from the export alone (load_backbone): its architecture and
    # input layer (the config's network fields) and its shape (the checkpoint's network spec).
    network = {key: state["config"][key] for key in BACKBONE_FIELDS if key in state["config"]}
    spec = state["network"]
    # the input layer a model outside natlearn needs in front (README)
    input_layer = {"mode": model.input.mode, **{k: spec.get(k) for k in ("mean", "std")}}
    if format == "hf":
        timm_weights = None
        if is_timm_arch(network.get("arch", "small")):
            timm_weights = timm_state_dict(backbone, network["arch"], spec)
        return write_hub_folder(
            out, backbone, network, spec, input_layer, timm_weights, epoch=state["epoch"]
        )
    if format == "torchvision":
        backbone = torchvision_state_dict(backbone, state["config"].get("arch", "small"))
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {
            "format": BACKBONE_FORMAT if format == "natlearn" else "torchvision-state-dict",
            "config": json.dumps(network),
            "network": json.dumps(spec),
            "input": json.dumps(input_layer),
        }
        atomic_write(out, lambda tmp: save_file(backbone, str(tmp), metadata=metadata))
    else:
        atomic_write(out, lambda tmp: torch.save(backbone, tmp))
    return out


def write_hub_folder(
    out: Path,
    backbone: dict[str, torch.Tensor],
    config: dict,
    network: dict,
    input_layer: dict,
    timm_weights: dict[str, torch.Tensor] | None = None,
    epoch: int | None = None,
) -> Path:
    """``out/model.safetensors`` (the backbone's weights, natlearn's keys) and ``out/config.json``:
    :class:`natlearn.hub.Backbone`'s constructor arguments ``run_config`` (the run config's network
    fields) and ``network`` (the network spec), and for a reader who does not import natlearn the
    input layer and image size the backbone expects, and the ``epoch`` it was trained for. Written
    in a temporary folder renamed into place, so ``out`` is never half written; an existing
    ``out`` is replaced only when it holds such an export. ``timm_weights`` (a timm backbone's,
    :func:`timm_state_dict`) go to ``out/timm/model.safetensors``."""
    from safetensors.torch import save_file

    from natlearn.version import __version__

    if out.exists() and not _is_hub_folder(out):
        raise NatlearnError(
            f"cannot export to {out}: it exists and is not a natlearn Hub export; "
            "give a new folder with --out"
        )
    described = {
        "format": BACKBONE_FORMAT,
        "natlearn_version": __version__,
        "run_config": config,
        "network": network,
        "input": input_layer,
        "image_size": network["image_size"],
        "epoch": epoch,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(backbone, str(tmp / HUB_WEIGHTS), metadata={"format": "pt"})
        (tmp / HUB_CONFIG).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
        if timm_weights is not None:
            (tmp / "timm").mkdir()
            save_file(timm_weights, str(tmp / TIMM_WEIGHTS), metadata={"format": "pt"})
        umask = current_umask()
        for file in tmp.rglob("*"):
            os.chmod(file, (0o777 if file.is_dir() else 0o666) & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _is_hub_folder(folder: Path) -> bool:
    try:
        described = json.loads((folder / HUB_CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(described, dict)
        and described.get("format") == BACKBONE_FORMAT
        and (folder / HUB_WEIGHTS).is_file()
    )


def hub_description(folder: str | Path) -> dict:
    """The ``config.json`` of a Hub folder written by ``natlearn export --format hf``.

    Raises NatlearnError when ``folder`` is not one."""
    folder = Path(folder)
    if not _is_hub_folder(folder):
        raise NatlearnError(
            f"{folder} is not a natlearn Hub export ({HUB_CONFIG} of format "
            f"{BACKBONE_FORMAT!r} beside {HUB_WEIGHTS}); write one with: "
            f"natlearn export RUN --format hf --out {folder}"
        )
    return json.loads((folder / HUB_CONFIG).read_text())


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


def timm_state_dict(
    backbone: dict[str, torch.Tensor], arch: str, spec: dict
) -> dict[str, torch.Tensor]:
    """An ``arch=timm:NAME`` backbone's trunk under the keys of timm's own model (``features_only``
    names some modules ``stages_0`` for ``stages.0`` or wraps them in ``model.``), so that
    ``timm.create_model(NAME, pretrained=True, in_chans=C, num_classes=0,
    pretrained_cfg_overlay=dict(file=...))`` loads it. Layers after the last feature level (a
    final norm, a ConvNeXt's ``head.norm``) were never part of the trunk and are absent: timm
    leaves them at their initial values (it loads a file for a headless model non-strictly), and
    ``features_only=True`` takes the file whole."""
    from natlearn.models.timm_backbone import timm_full_model_keys

    full = timm_full_model_keys(arch, spec["channels"], spec["image_size"])
    renamed = {}
    for key, value in backbone.items():
        if not key.startswith("convs.body."):
            continue
        key = key.removeprefix("convs.body.")
        first, _, rest = key.partition(".")
        candidates = [key, key.removeprefix("model.")] + [
            f"{first[:i]}.{first[i + 1 :]}.{rest}" for i, c in enumerate(first) if c == "_"
        ]
        found = [name for name in candidates if name in full]
        if not found:
            raise NatlearnError(
                f"cannot name {key} of {arch} in timm's own model; export it without --format hf "
                "and load it with timm's features_only=True (README)"
            )
        renamed[found[0]] = value
    return renamed


def load_backbone(path: str | Path) -> Network:
    """The backbone a ``.safetensors`` export or a Hub folder (``--format hf``) holds, rebuilt from
    it alone (no checkpoint, no config): the input layer, conv blocks or stages and neck with their
    weights, in eval mode on the CPU. Calling it maps (b, C, S, S) images in [0, 1] to the pooled
    (b, F) features; :meth:`Network.features` gives any stage's. A ``timm:NAME`` backbone needs
    timm installed."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        described = hub_description(path)
        model = backbone_network(described["run_config"], described["network"])
        model.load_state_dict(load_file(str(path / HUB_WEIGHTS)))
        return model.eval()
    if path.suffix != ".safetensors" or not path.is_file():
        raise NatlearnError(
            f"cannot load a backbone from {path}: give a .safetensors file or a folder written by "
            "natlearn export (only they carry the architecture)"
        )
    with safe_open(str(path), framework="pt") as exported:
        metadata = exported.metadata() or {}
        weights = {key: exported.get_tensor(key) for key in exported.keys()}  # noqa: SIM118
    if metadata.get("format") != BACKBONE_FORMAT or "config" not in metadata:
        raise NatlearnError(
            f"{path} is not a natlearn backbone export with its architecture; "
            "re-export it with this natlearn: natlearn export CHECKPOINT --out NAME.safetensors"
        )
    model = backbone_network(json.loads(metadata["config"]), json.loads(metadata["network"]))
    model.load_state_dict(weights)
    return model.eval()
