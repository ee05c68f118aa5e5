"""Run folders and checkpoints: atomic writes, ``weights_only`` loads, RNG capture, pruning
(backbone exports: :mod:`natlearn.export`)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import torch
import yaml

from natlearn.config import Config, apply_overrides
from natlearn.errors import NatlearnError
from natlearn.files import atomic_write
from natlearn.models import Network, build_model
from natlearn.training.faults import fault_point

__all__ = [
    "FORMAT",
    "RunFolder",
    "save_checkpoint",
    "copy_checkpoint",
    "checkpoint_file",
    "load_checkpoint",
    "nothing_to_resume",
    "checkpoint_paths",
    "prune_checkpoints",
    "remove_checkpoint",
    "load_model",
    "network_from_state",
    "evaluation_config",
    "trained_image_size",
]

FORMAT = "natlearn-checkpoint-v1"
_NAME = re.compile(r"epoch_(\d+)\.pt$")
PARTIAL_NAME = (
    "partial.pt"  # the mid-epoch checkpoint (checkpoint_every_steps), removed when its epoch ends
)


def nothing_to_resume(out: Path) -> NatlearnError:
    """The one refusal of ``--resume`` on a run folder without a checkpoint to continue from."""
    return NatlearnError(
        f"nothing to resume in {out}: no readable checkpoint under {out / 'checkpoints'}; "
        "drop --resume to start a new run"
    )


class RunFolder:
    """A run's folder: ``config.yaml``, ``log.jsonl`` (one JSON line per epoch) and ``checkpoints/``
    (``epoch_NNNN.pt`` at epoch ends, ``partial.pt`` mid-epoch). Only rank 0 writes to it."""

    _FILES = (
        "checkpoints",
        "log.jsonl",
        "config.yaml",
        "backbone.safetensors",
        "tensorboard",
        "metrics.csv",
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.log = self.path / "log.jsonl"
        self.partial = self.path / "checkpoints" / PARTIAL_NAME

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: the finished run's final checkpoint."""
        return self.path / "checkpoints" / "last.pt"

    @property
    def backbone(self) -> Path:
        """``backbone.safetensors``: the finished run's backbone, loadable with load_backbone."""
        return self.path / "backbone.safetensors"

    def epoch_checkpoint(self, epochs_done: int) -> Path:
        return self.path / "checkpoints" / f"epoch_{epochs_done:04d}.pt"

    def holds_checkpoint(self) -> bool:
        return self.partial.is_file() or bool(checkpoint_paths(self.path))

    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse (one line) to start over a run without --overwrite, or to resume one that is not
        there."""
        # A folder with only config.yaml and an empty checkpoints/ (a run that failed before its
        # first checkpoint and log line) holds nothing to resume or to lose: a plain re-run may
        # reuse it.
        if not (resume or overwrite) and (self.log.exists() or self.holds_checkpoint()):
            raise NatlearnError(
                f"run folder {self.path} already holds a run; "
                "pass --resume to continue it or --overwrite to start over"
            )
        if resume and not self.holds_checkpoint():  # refused before the folder is prepared
            raise nothing_to_resume(self.path)

    def prepare(self, overwrite: bool) -> None:
        """Create the folder (emptied first with ``overwrite``) and drop temporary files a killed
        run left."""
        if overwrite:
            for path in (self.path / name for name in self._FILES):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise NatlearnError(
                f"cannot create run folder {self.path}: {error.strerror}; choose another out="
            ) from None
        for stale in (self.path / "checkpoints").glob(".*.tmp"):
            stale.unlink()

    def write_config(self, config: Config) -> None:
        text = yaml.safe_dump({**config.to_dict(), "widths": list(config.widths)}, sort_keys=False)
        atomic_write(self.path / "config.yaml", lambda tmp: tmp.write_text(text))

    def read_log(self, epochs_done: int, truncate: bool) -> list[dict]:
        """The log lines of the epochs a checkpoint covers; ``truncate`` drops the rest from the
        file (a crash may have logged one more)."""
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        rows = [row for row in rows if row["epoch"] <= epochs_done]
        if truncate:
            self.log.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return rows

    def append_log(self, row: dict) -> None:
        with open(self.log, "a") as log:
            log.write(json.dumps(row) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts only) atomically, tagged with
    FORMAT.

    A ``.sha256`` file beside it lets :func:`load_checkpoint` detect a checkpoint whose bytes
    changed after writing (a damaged disk or a partial copy), not only one torch cannot parse. The
    pair changes in an order that never leaves a digest that does not match its checkpoint: the old
    digest goes first (the old checkpoint stays loadable, unverified), then the checkpoint is
    renamed into place, then its digest is written; a failure removes the digest, so no orphan or
    stale one remains.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    _write_checkpoint_bytes(path, buffer.getvalue())


def copy_checkpoint(source: Path, path: Path) -> None:
    """Write checkpoint ``source``'s bytes to ``path`` as :func:`save_checkpoint` writes them
    (atomically, with its digest), without loading or serialising it again."""
    _write_checkpoint_bytes(path, Path(source).read_bytes())


def _write_checkpoint_bytes(path: Path, payload: bytes) -> None:
    digest = _digest_path(path)
    try:
        digest.unlink(missing_ok=True)
        atomic_write(
            path, lambda tmp: (tmp.write_bytes(payload), fault_point(f"in-checkpoint:{path.name}"))
        )
        atomic_write(digest, lambda tmp: tmp.write_text(hashlib.sha256(payload).hexdigest() + "\n"))
    except OSError as error:
        digest.unlink(missing_ok=True)
        raise NatlearnError(
            f"cannot write checkpoint {path}: {error.strerror or error}; "
            "free space or fix permissions, then --resume"
        ) from None


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or for a run folder (``out=`` of natlearn train) its newest epoch
    checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = checkpoint_paths(path)
    if not found:
        raise NatlearnError(
            f"{path} is a folder without epoch checkpoints; give a run folder of natlearn train "
            f"(with {Path('checkpoints') / 'epoch_NNNN.pt'} in it) or a checkpoint .pt file"
        )
    return found[-1]


def load_checkpoint(path: str | Path) -> dict:
    """Load a natlearn checkpoint on the CPU with ``torch.load(weights_only=True)``; a run folder
    stands for its newest epoch checkpoint.

    Raises NatlearnError when the file is missing, unreadable, fails its checksum, or is not a
    natlearn checkpoint.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise NatlearnError(
            f"checkpoint {path} does not exist; "
            "give the path of a .pt file written by natlearn train"
        )
    payload = path.read_bytes()
    digest = _digest_path(path)
    if digest.is_file() and digest.read_text().strip() != hashlib.sha256(payload).hexdigest():
        raise NatlearnError(
            f"checkpoint {path} fails its checksum ({digest.name}); it was damaged after writing"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        reason = type(error).__name__
        raise NatlearnError(
            f"checkpoint {path} cannot be read ({reason}); "
            "it is damaged or not a natlearn checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise NatlearnError(
            f"{path} is not a natlearn checkpoint (no '{FORMAT}' tag); "
            "give a file written by natlearn train"
        )
    return state


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """The epoch checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and its digest (no orphan ``.sha256`` left behind)."""
    path.unlink(missing_ok=True)
    _digest_path(path).unlink(missing_ok=True)


def prune_checkpoints(run_dir: Path, keep_last: int, keep_every: int) -> None:
    """Delete epoch checkpoints except the newest ``keep_last`` and every ``keep_every``-th
    epoch."""
    paths = checkpoint_paths(run_dir)
    for path in paths[:-keep_last]:
        epoch = int(_NAME.search(path.name).group(1))  # type: ignore[union-attr]
        if not (keep_every and epoch % keep_every == 0):
            remove_checkpoint(path)


def backbone_network(config: dict, network: dict) -> Network:
    """The untrained backbone (no head) an export's or a checkpoint's ``config`` and ``network``
    describe."""
    model = build_model(Config.from_checkpoint(config), network)
    model.head = torch.nn.Identity()
    return model


def network_from_state(state: dict) -> Network:
    """The network of a loaded checkpoint, with its weights, in eval mode on the CPU. A
    ``backbone_only`` state (:func:`natlearn.zoo.pretrained_state`) has no NAT head."""
    if state.get("backbone_only"):
        model = backbone_network(state["config"], state["network"])
    else:
        model = build_model(Config.from_checkpoint(state["config"]), state["network"])
    model.load_state_dict(state["model"])
    return model.eval()


def load_model(path: str | Path) -> Network:
    """The trained network of a checkpoint file, in eval mode on the CPU."""
    return network_from_state(load_checkpoint(path))


def evaluation_config(
    state: dict, overrides: dict[str, object] | list[str] | tuple[str, ...] = ()
) -> tuple[Config, str]:
    """The config to evaluate or embed a loaded checkpoint's network with, and where its image size
    came from (for the start-up summary): the training config, then ``overrides``. A run trained
    with ``image_size=0`` (each folder's first image's side) reads any folder at the size it
    trained at, as its filters expect, unless ``overrides`` set image_size."""
    overrides = list(overrides) if isinstance(overrides, tuple) else overrides
    config = Config.from_checkpoint(state["config"], overrides)
    if apply_overrides(Config(image_size=-1), overrides).image_size != -1:
        return config, "image_size= given"
    if config.image_size:
        return config, "the run's image_size"
    size = trained_image_size(state)
    if size is None:
        return config, "the first image's side: the run did not record the size it trained at"
    return dataclasses.replace(config, image_size=size), "the size the run trained at"


def trained_image_size(state: dict) -> int | None:
    """The side of the images a checkpoint's run trained on. Checkpoints written before it was
    recorded give it when their crop was the whole image (crop_size=0); None otherwise."""
    if "data" in state:
        return state["data"]["image_size"]
    return state["network"]["image_size"] if not state["config"].get("crop_size") else None
