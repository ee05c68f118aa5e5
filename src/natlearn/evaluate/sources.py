"""What an evaluation's source names: a run folder or checkpoint, a packaged backbone
(``pretrained:NAME``, :mod:`natlearn.zoo`), or one of the baselines
(:data:`natlearn.choices.BASELINES`), with the config it is evaluated with and the run folder its
results belong to. ``natlearn eval``, ``compare`` and ``transfer`` read sources alike."""

from __future__ import annotations

from pathlib import Path

from natlearn.choices import BASELINES, NO_NETWORK, RANDOM_INIT
from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.training.checkpoint import checkpoint_file, evaluation_config, load_checkpoint
from natlearn.zoo import is_pretrained, pretrained_state

__all__ = ["load_source", "run_folder", "source_config", "source_file"]


def load_source(source: str) -> dict:
    """The loaded checkpoint a network source names: a run folder's newest, a .pt file, or a
    packaged backbone's (``pretrained:NAME``, its backbone alone)."""
    return pretrained_state(source) if is_pretrained(source) else load_checkpoint(source)


def source_file(source: str, state: dict) -> Path:
    """The file holding a network source's weights (its bytes key a reused evaluation)."""
    return Path(state["weights_file"]) if is_pretrained(source) else checkpoint_file(source)


def source_config(source: str, base: Config | None, overrides: list[str]) -> Config | None:
    """The config of an eval source with the data overrides (None for raw-pixels and
    hand-crafted), its checkpoint loaded and checked now rather than after the sources before it
    were evaluated."""
    if source in NO_NETWORK:
        return None
    if source == RANDOM_INIT:
        return apply_overrides(base or Config(), overrides)
    if not is_pretrained(source) and not Path(source).exists():
        raise NatlearnError(
            f"{source!r} does not exist; give a run folder, a checkpoint .pt file "
            "(RUN/checkpoints/epoch_NNNN.pt), pretrained:NAME (natlearn.zoo.available()), "
            "random-init, raw-pixels or hand-crafted"
        )
    return evaluation_config(load_source(source), overrides)[0]


def run_folder(source: str, otherwise: Path) -> Path:
    """The run folder a checkpoint source belongs to (a run folder, or a .pt file in its
    checkpoints/); ``otherwise`` for baselines, packaged backbones and checkpoints kept
    elsewhere."""
    if source in BASELINES or is_pretrained(source):
        return otherwise
    checkpoints = checkpoint_file(source).parent
    return checkpoints.parent if checkpoints.name == "checkpoints" else otherwise
