"""The model zoo: backbones that ship inside the package, pre-trained with NAT.
``natlearn.pretrained(NAME)`` returns one ready to use, and
``natlearn eval pretrained:NAME data=...`` evaluates it like a run.

Each is a Hub folder (:func:`natlearn.export.write_hub_folder`'s layout) under
``natlearn/weights/NAME/`` with its model card (``README.md``: data, recipe, and the numbers
measured on the test set with the command that measured them). Weight matrices are stored in
float16 (half the bytes; the card's numbers are measured on these stored weights) and loaded as
float32.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from natlearn.errors import NatlearnError
from natlearn.export import HUB_CONFIG, HUB_WEIGHTS, hub_description, load_backbone
from natlearn.models import Network

__all__ = [
    "PRETRAINED_PREFIX",
    "available",
    "is_pretrained",
    "pretrained",
    "pretrained_folder",
    "pretrained_state",
]

PRETRAINED_PREFIX = "pretrained:"


def _weights_root() -> Path:
    return Path(str(resources.files("natlearn") / "weights"))


def available() -> list[str]:
    """The names of the packaged backbones."""
    root = _weights_root()
    if not root.is_dir():
        return []
    return sorted(folder.name for folder in root.iterdir() if (folder / HUB_CONFIG).is_file())


def is_pretrained(source: str) -> bool:
    """Whether an evaluation source names a packaged backbone (``pretrained:NAME``)."""
    return str(source).startswith(PRETRAINED_PREFIX)


def pretrained_folder(name: str) -> Path:
    """The Hub folder of the packaged backbone ``name`` (``pretrained:`` in front is accepted).

    Raises NatlearnError naming the packaged backbones when there is no such one."""
    name = name.removeprefix(PRETRAINED_PREFIX)
    names = available()
    if name not in names:
        raise NatlearnError(
            f"no pretrained backbone named {name!r}; natlearn ships {', '.join(names) or 'none'} "
            f"(e.g. natlearn.pretrained({(names or ['NAME'])[0]!r}))"
        )
    return _weights_root() / name


def pretrained(name: str) -> Network:
    """The packaged backbone ``name`` (input layer, conv blocks, neck; no NAT head) in eval mode
    on the CPU, float32. Calling it maps (b, C, S, S) images in [0, 1] to its pooled (b, F)
    features; :meth:`Network.features` gives any layer's::

        backbone = natlearn.pretrained("cifar10-small")
        features = backbone(images)  # (b, 3, 32, 32) in [0, 1] -> (b, 128)
    """
    return load_backbone(pretrained_folder(name))


def pretrained_state(name: str) -> dict:
    """The packaged backbone ``name`` as a loaded checkpoint of its backbone alone
    (``backbone_only``), for the code that evaluates checkpoints (``natlearn eval`` and
    ``compare``): its config (the run's network fields over the defaults), network spec, weights
    (float32), epoch and training image size."""
    from natlearn.config import Config

    folder = pretrained_folder(name)
    described = hub_description(folder)
    model = load_backbone(folder)
    return {
        "config": Config.from_checkpoint(described["run_config"]).to_dict(),
        "network": described["network"],
        "model": model.state_dict(),
        "backbone_only": True,
        "epoch": described.get("epoch"),
        "data": {"image_size": described["image_size"]},
        "weights_file": str(folder / HUB_WEIGHTS),
    }
