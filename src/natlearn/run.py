"""A training run's pieces, set up once: the data, the network (plain, and as the step calls it),
the objective, the optimizer, the augmentation and the run folder; its checkpoint and how a resume
restores it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from natlearn.checkpoint import RunFolder, latest_checkpoint, rng_state, set_rng_state
from natlearn.config import Config, Resolved
from natlearn.data import Augmentation, ImageData
from natlearn.devices import step_model
from natlearn.distributed import Ranks, sync_batchnorm
from natlearn.errors import NatlearnError
from natlearn.loggers import Logger, NoLogger
from natlearn.models import Network, initial_model, network_spec
from natlearn.objectives import Objective, objective_for

__all__ = ["EpochState", "Run", "build_run"]


@dataclass
class EpochState:
    """How far an epoch got: what a mid-epoch checkpoint needs to continue it exactly."""

    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # step statistics summed over ranks
    skipped: int = 0
    seconds: float = 0.0
    generator: torch.Tensor | None = None


@dataclass
class Run:
    """Everything an epoch needs, set up once by :func:`build_run`."""

    config: Config
    resolved: Resolved
    ranks: Ranks
    data: ImageData
    model: Network  # the plain network checkpoints save
    step_model: torch.nn.Module  # what steps call: channels-last, compiled and/or DDP-wrapped
    objective: Objective
    optimizer: torch.optim.Optimizer
    augment: Augmentation
    folder: RunFolder
    last_checkpoint: Path | None = None
    logger: Logger = field(default_factory=NoLogger)  # rank 0's is opened by train()

    @property
    def steps_per_epoch(self) -> int:
        """Global batches in an epoch (near-equal ones: see run_epoch)."""
        return math.ceil(len(self.data) / self.config.batch_size)

    def snapshot(self, epochs_done: int) -> dict:
        """The checkpoint of the run after ``epochs_done`` whole epochs."""
        return {
            "epoch": epochs_done,
            "config": self.config.to_dict(),
            "network": network_spec(self.data, self.resolved.crop_size),
            # What evaluation reads the run's images by: the size it trained at (for image_size=0),
            # and which folder split it pre-trained on (natlearn.data.splits.check_split).
            "data": {"image_size": self.data.image_size, "split": self.data.split_record},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(),
            "rng": rng_state(),
        }

    def resume(self) -> tuple[int, list[dict], EpochState | None]:
        """Restore the newest readable checkpoint: weights, optimizer, assignment, RNGs and,
        mid-epoch, how far the epoch got. Returns the epochs done, their log rows, and the state of
        an epoch to continue."""
        found = latest_checkpoint(self.folder.path)
        if found is None:
            raise NatlearnError(
                f"nothing to resume: no readable checkpoint in {self.folder.path / 'checkpoints'}; "
                "drop --resume to start a new run"
            )
        self.last_checkpoint, state = found
        self.config.check_resumable(state["config"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
        epoch_state = EpochState(**state["progress"]) if "progress" in state else None
        return (
            state["epoch"],
            self.folder.read_log(state["epoch"], truncate=self.ranks.main),
            epoch_state,
        )


def build_run(config: Config, data: ImageData, ranks: Ranks | None = None) -> Run:
    """The objective, network (initialised from ``config.seed``) and optimizer ``config`` trains
    ``data`` with; nothing is read from or written to the run folder yet."""
    ranks = ranks or Ranks()
    resolved = config.resolve(data.image_size, len(data), ranks.world_size, ranks.local_rank)
    device = resolved.device
    objective = objective_for(config, data, ranks)
    model = sync_batchnorm(initial_model(config, data).to(device), ranks, device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    wrapped = step_model(
        model, device, config.channels_last, config.compile, ddp=ranks.world_size > 1
    )
    augment = Augmentation.from_config(config, resolved.crop_size)
    return Run(
        config,
        resolved,
        ranks,
        data,
        model,
        wrapped,
        objective,
        optimizer,
        augment,
        RunFolder(config.out),
    )
