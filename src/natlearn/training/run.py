"""A training run's pieces, set up once: the data, the network (plain, and as the step calls it),
the objective, the optimizer, the augmentation and the run folder; its checkpoint and how a resume
restores it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from natlearn.config import Config, Resolved
from natlearn.data import Augmentation, ImageData
from natlearn.models import Network, initial_model, network_spec
from natlearn.nat.objective import Objective, objective_for
from natlearn.training.checkpoint import RunFolder
from natlearn.training.devices import step_model
from natlearn.training.distributed import Ranks, sync_batchnorm
from natlearn.training.loggers import Logger, NoLogger
from natlearn.training.resume import resume_point, rng_state, set_rng_state

__all__ = ["Diagnostics", "EpochState", "Run", "build_run"]


class Diagnostics:
    """How fast each part of the network learns, logged per epoch beside the objective's
    statistics: the gradient norm of each stage (``grad_conv1``, ``grad_layer1``, ... / the conv
    blocks; ``grad_neck`` where the neck has weights; ``grad_head``) and, for a normalised output,
    ``h_norm``, the mean norm of the head's output before the L2 normalisation (the gradient that
    reaches the network through it scales with 1 / ||h||). Both come from the step itself (the
    gradients it computed, a forward hook on the head's last linear map): no extra forward.
    :meth:`close` removes the hook."""

    def __init__(self, model: Network):
        trunk = model.convs
        if hasattr(trunk, "stage_names"):  # a timm trunk: its stages are not separate children
            blocks = [("trunk", trunk)]
        else:
            blocks = list(trunk.named_children())
        blocks += [("neck", model.neck), ("head", model.head)]
        stages = {
            name: params
            for name, block in blocks
            if (params := [p for p in block.parameters() if p.requires_grad])
        }
        self.stages = tuple(stages)
        self._params = [p for params in stages.values() for p in params]
        # Which stage each parameter belongs to: one fused norm per step, then a sum per stage.
        self._stage_of = torch.tensor(
            [i for i, params in enumerate(stages.values()) for _ in params],
            device=self._params[0].device,
        )
        self._hook, self._h_norm = None, None
        if model.head.normalize:
            self._hook = model.head.linear.register_forward_hook(self._record)

    @property
    def names(self) -> tuple[str, ...]:
        return (*(f"grad_{stage}" for stage in self.stages), *(("h_norm",) if self._hook else ()))

    def _record(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self._h_norm = output.detach().float().norm(dim=1).mean()

    def step(self) -> dict[str, torch.Tensor]:
        """The statistics of the step whose forward and backward just ran (0-dim device
        tensors)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        squares = torch.stack(torch._foreach_norm(grads)).float() ** 2
        norms = squares.new_zeros(len(self.stages)).index_add_(0, self._stage_of, squares).sqrt()
        stats = {f"grad_{stage}": norm for stage, norm in zip(self.stages, norms, strict=True)}
        if self._h_norm is not None:
            stats["h_norm"] = self._h_norm
        return stats

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()


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
    diagnostics: Diagnostics
    last_checkpoint: Path | None = None
    logger: Logger = field(default_factory=NoLogger)  # rank 0's is opened by train()

    @property
    def statistics(self) -> tuple[str, ...]:
        """What a step reports: the objective's statistics and the diagnostics."""
        return (*self.objective.statistics, *self.diagnostics.names)

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
        """Restore the newest readable checkpoint (:func:`~natlearn.training.resume.resume_point`):
        weights, optimizer, assignment, RNGs and, mid-epoch, how far the epoch got. Returns the
        epochs done, their log rows, and the state of an epoch to continue."""
        self.last_checkpoint, state = resume_point(self.folder.path)
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
        Diagnostics(model),
    )
