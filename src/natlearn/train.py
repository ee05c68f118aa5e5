"""The training loop, as in the paper: per batch, forward; every few epochs re-assign the batch's targets
among its images; square loss to the new targets; SGD step.

:func:`train` sets a run up, :func:`run_epoch` loops over an epoch's batches and :func:`train_step` is one
step. Statistics stay on the device until the epoch ends; non-finite values, checkpoints and progress are
handled around the step, not in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from natlearn.checkpoint import RunFolder, latest_checkpoint, prune_checkpoints, remove_checkpoint, rng_state, save_checkpoint, set_rng_state
from natlearn.config import Config, Resolved
from natlearn.data import Augmentation, ImageData, StreamingFolder
from natlearn.devices import resolve_device
from natlearn.distributed import Ranks, init_ranks, sync_batchnorm
from natlearn.errors import NatlearnError
from natlearn.faults import fault_point
from natlearn.models import Network, initial_model, network_spec
from natlearn.nonfinite import NonFiniteBatch, check_finite, largest_gradient, stop_or_skip, weights_finite
from natlearn.objectives import NoiseAsTargets, Objective, Supervised, objective_for

__all__ = ["EpochState", "Run", "TrainResult", "build_run", "learning_rate", "pretraining_data", "run_epoch", "train", "train_step"]

_SHOW_EVERY = 25  # steps between progress-bar statistics: each one waits for the device


@dataclass
class TrainResult:
    """A finished (or resumed-and-finished) run."""

    model: Network
    objective: NoiseAsTargets | Supervised
    config: Config
    run_dir: Path
    history: list[dict] = field(default_factory=list)


@dataclass
class Run:
    """Everything an epoch needs, set up once by :func:`train`."""

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

    def snapshot(self, epochs_done: int) -> dict:
        """The checkpoint of the run after ``epochs_done`` whole epochs."""
        return {
            "epoch": epochs_done,
            "config": self.config.to_dict(),
            "network": network_spec(self.data, self.resolved.crop_size),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(),
            "rng": rng_state(),
        }


@dataclass
class EpochState:
    """How far an epoch got: what a mid-epoch checkpoint needs to continue it exactly."""

    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0
    generator: torch.Tensor | None = None


def train(config: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a network with Noise As Targets (or the supervised baseline) and checkpoint every epoch.

    Under ``torchrun`` each process trains on its share of every global batch (see :mod:`natlearn.distributed`);
    rank 0 alone writes the run folder.

    Args:
        config: validated here; ``config.out`` is the run folder.
        resume: continue from the newest readable checkpoint in ``config.out`` (mid-epoch ones too).
        overwrite: delete an earlier run in ``config.out`` first.
    Returns:
        The trained model, the objective (with the NAT assignment), and the per-epoch history.
    """
    # The machine, then the data: every input is checked before the run folder changes.
    config.validate()
    ranks = init_ranks(config.device)
    resolve_device(config.device)  # a missing GPU is reported before any data is read
    run = build_run(config, pretraining_data(config), ranks)
    model, objective, optimizer, folder = run.model, run.objective, run.optimizer, run.folder

    # The run folder: rank 0 prepares it once every rank has looked at it.
    folder.check(resume, overwrite)
    ranks.barrier()
    if ranks.main:
        folder.prepare(overwrite)
    ranks.barrier()

    # Resume: weights, optimizer, assignment, RNGs and, mid-epoch, how far the epoch got.
    start_epoch, history, epoch_state = 0, [], None
    if resume:
        found = latest_checkpoint(folder.path)
        if found is None:
            raise NatlearnError(f"nothing to resume: no readable checkpoint in {folder.path / 'checkpoints'}; drop --resume to start a new run")
        run.last_checkpoint, state = found
        config.check_resumable(state["config"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
        start_epoch = state["epoch"]
        epoch_state = EpochState(**state["progress"]) if "progress" in state else None
        history = folder.read_log(start_epoch, truncate=ranks.main)
    if ranks.main:
        folder.write_config(config)

    for epoch in range(start_epoch, config.epochs):
        row = run_epoch(run, epoch, epoch_state or EpochState())
        history.append(row)
        run.last_checkpoint = folder.epoch_checkpoint(epoch + 1)
        if ranks.main:
            folder.append_log(row)
            save_checkpoint(run.last_checkpoint, run.snapshot(epoch + 1))
            remove_checkpoint(folder.partial)
            prune_checkpoints(folder.path, config.keep_last, config.keep_every)
            if config.progress:
                tqdm.write(f"{_describe(run, epoch)}: " + ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch"))
        ranks.barrier()
        epoch_state = None
    return TrainResult(model, objective, config, folder.path, history)


def build_run(config: Config, data: ImageData, ranks: Ranks | None = None) -> Run:
    """The objective, network (initialised from ``config.seed``) and optimizer ``config`` trains ``data``
    with; nothing is read from or written to the run folder yet."""
    ranks = ranks or Ranks()
    resolved = config.resolve(data.image_size, len(data), ranks.world_size, ranks.local_rank)
    device = resolved.device
    objective = objective_for(config, data, ranks)
    model = sync_batchnorm(initial_model(config, data).to(device), ranks, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    augment = Augmentation.from_config(config, resolved.crop_size)
    return Run(config, resolved, ranks, data, model, step_model(model, config, ranks, device), objective, optimizer, augment, RunFolder(config.out))


def run_epoch(run: Run, epoch: int, state: EpochState) -> dict:
    """Train one epoch (from ``state.step`` when continuing one) and return its log row."""
    config, ranks, model = run.config, run.ranks, run.model
    lr = learning_rate(config, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    generator = epoch_generator(config.seed, epoch)
    # Near-equal batches: no tiny last batch to upset BatchNorm or make the assignment trivial.
    num_batches = math.ceil(len(run.data) / config.batch_size)
    batch_ids = torch.tensor_split(torch.randperm(len(run.data), generator=generator), num_batches)
    if state.generator is not None:  # continuing this epoch mid-way
        generator.set_state(state.generator)
    names = sorted(run.objective.statistics)
    # Per-rank sums of the step statistics; a mid-epoch checkpoint holds their sum over ranks, resumed on rank 0.
    carried = [state.sums.get(name, 0.0) if ranks.main else 0.0 for name in names]
    sums = torch.tensor(carried, dtype=torch.float64, device=run.resolved.device)
    zero = torch.zeros((), device=run.resolved.device)
    may_drop = isinstance(run.data, StreamingFolder) and run.data.on_bad_image == "skip"  # unreadable images leave batches
    run.step_model.train()
    batches = tqdm(
        run.data.batches([ranks.shard(ids) for ids in batch_ids[state.step :]], run.resolved.device, config.workers),
        total=num_batches, initial=state.step, desc=_describe(run, epoch), leave=False,
        disable=None if config.progress and ranks.main else True,
    )  # fmt: skip
    started = time.perf_counter() - state.seconds
    for step, (ids, images) in enumerate(batches, start=state.step):
        rows = _global_rows(ranks, images, len(batch_ids[step]), may_drop)  # this rank's rows of the global batch
        inputs = run.augment(images, generator, rows)
        # A skipped batch must not leave its statistics in BatchNorm's running buffers (evaluation uses them).
        buffers = [b.clone() for b in model.buffers()] if config.on_nonfinite == "skip" else None
        try:
            stats = train_step(run, ids, inputs, rows, epoch)
        except NonFiniteBatch as bad:
            for buffer, saved in zip(model.buffers(), buffers or [], strict=False):
                buffer.copy_(saved)
            recoverable = buffers is None or not ranks.any(not weights_finite(model))
            stop_or_skip(config, bad.what, epoch, step, run.last_checkpoint, recoverable)
            run.optimizer.zero_grad(set_to_none=True)
            state.skipped += 1
        else:
            sums += torch.stack([stats[name].float() if name in stats else zero for name in names]).double()
        state.step = step + 1
        if not batches.disable and (state.step % _SHOW_EVERY == 0 or state.step == num_batches):
            shown = [name for name in ("loss", "cosine", "train_accuracy") if name in names]
            means = dict(zip(names, (sums / max(1, state.step - state.skipped)).tolist(), strict=True))
            batches.set_postfix({name: f"{means[name]:.4f}" for name in shown})
        fault_point(f"after-step:{epoch + 1}:{step + 1}")
        if config.checkpoint_every_steps and state.step % config.checkpoint_every_steps == 0 and state.step < num_batches:
            state.seconds, state.generator = time.perf_counter() - started, generator.get_state()
            state.sums = dict(zip(names, ranks.sum(sums.cpu()).tolist(), strict=True))
            if ranks.main:
                save_checkpoint(run.folder.partial, {**run.snapshot(epoch), "progress": dataclasses.asdict(state)})
            ranks.barrier()
    run.objective.check()
    if not weights_finite(model):
        stop_or_skip(config, "weights or BatchNorm statistics", epoch, num_batches - 1, run.last_checkpoint, recoverable=False)
    seconds = time.perf_counter() - started
    trained = max(1, num_batches - state.skipped)
    means = (ranks.sum(sums.cpu()) / ranks.world_size).tolist()  # every rank's steps, reduced once per epoch
    return {
        "epoch": epoch + 1,
        **{name: total / trained for name, total in zip(names, means, strict=True)},
        "skipped_batches": state.skipped,
        "lr": lr,
        "seconds": seconds,
        "images_per_s": len(run.data) / seconds,
        "step_ms": 1000 * seconds / num_batches,
    }


def train_step(run: Run, ids: torch.Tensor, inputs: torch.Tensor, rows: tuple[int, int], epoch: int) -> dict[str, torch.Tensor]:
    """One step on this rank's images ``ids`` (b,) with augmented ``inputs`` (b, C, S, S), rows ``rows`` of the
    global batch: forward, re-assignment (in the epochs that do it), loss to the new targets, SGD step.

    Returns the step's statistics as 0-dim device tensors. Raises :class:`NonFiniteBatch` before the optimizer
    steps if the outputs, the loss or the gradients are not finite.
    """
    with _autocast(run.resolved):
        outputs = run.step_model(inputs.contiguous(memory_format=_layout(run)))
    check_finite("outputs", outputs, run.ranks)
    stats = {}
    if run.objective.reassigns(epoch):
        changed, seconds = _timed(outputs.device, lambda: run.objective.reassign(ids, outputs.detach(), rows))
        stats = {"reassigned": torch.tensor(changed, device=outputs.device), "assign_ms": torch.tensor(1000 * seconds, device=outputs.device)}
    loss, loss_stats = run.objective.loss(ids, outputs, rows)
    check_finite("loss", loss, run.ranks)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    check_finite("gradients", largest_gradient(run.model))
    run.optimizer.step()
    return {**stats, **loss_stats}


def pretraining_data(config: Config) -> ImageData:
    """The images ``config`` pre-trains on: its training split, or a seeded random ``subset`` of it."""
    data = config.load_data("pretrain")
    config.resolve(data.image_size, len(data))
    if not config.subset:
        return data
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, len(data)]).generate_state(1)[0]))
    return data.subset(torch.randperm(len(data), generator=generator)[: config.subset].sort().values)


def learning_rate(config: Config, epoch: int) -> float:
    """The lr of an epoch: linear warm-up, then constant, cosine, or step decay (stateless, so resumable)."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    progress = (epoch - config.warmup_epochs) / max(1, config.epochs - config.warmup_epochs)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.lr_schedule == "step":
        return config.lr * 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return config.lr


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batch order and augmentation of an epoch depend on (seed, epoch) only: resumes replay them."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def step_model(model: Network, config: Config, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """What the training step calls: the network in channels-last layout (GPUs), compiled, and wrapped in DDP
    when several ranks train. ``model`` itself stays the plain network that checkpoints save."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    wrapped: torch.nn.Module = model
    if ranks.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(wrapped) if config.compile else wrapped


def _describe(run: Run, epoch: int) -> str:
    return f"epoch {epoch + 1}/{run.config.epochs}" + (" (re-assign)" if run.objective.reassigns(epoch) else "")


def _autocast(resolved: Resolved) -> contextlib.AbstractContextManager:
    """bf16 autocast for the network; the loss and the assignment run in fp32."""
    if resolved.precision == "bf16":
        return torch.autocast(resolved.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _layout(run: Run) -> torch.memory_format:
    cuda = run.resolved.device.type == "cuda"
    return torch.channels_last if run.config.channels_last and cuda else torch.contiguous_format


def _timed(device: torch.device, work):
    """``work()``'s result and its wall-clock seconds, not counting device work still queued before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _global_rows(ranks: Ranks, delivered: torch.Tensor, planned: int, may_drop: bool) -> tuple[int, int]:
    """(first row, size) of this rank's share in the global batch. Shares are tensor_split's of the planned batch,
    unless streamed images may have been dropped as unreadable: then the ranks exchange what they really got."""
    if ranks.world_size == 1 or not may_drop:
        return ranks.first_row(planned), planned
    sizes = ranks.gather(torch.tensor([len(delivered)], device=delivered.device)).flatten().tolist()
    return sum(sizes[: ranks.rank]), sum(sizes)
