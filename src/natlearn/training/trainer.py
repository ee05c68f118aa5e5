"""The training loop, as in the paper: per batch, forward; every few epochs re-assign the batch's
targets among its images; square loss to the new targets; SGD step.

:func:`train` sets a run up, :func:`run_epoch` loops over an epoch's batches and :func:`train_step`
is one step. Statistics stay on the device until the epoch ends; non-finite values, checkpoints and
progress are handled around the step, not in it.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from natlearn.config import Config, resolve_device
from natlearn.data import pretraining_data
from natlearn.export import export_backbone
from natlearn.models import Network
from natlearn.nat.objective import Objective
from natlearn.training.checkpoint import (
    copy_checkpoint,
    prune_checkpoints,
    remove_checkpoint,
    save_checkpoint,
)
from natlearn.training.devices import autocast, memory_format
from natlearn.training.distributed import Ranks, init_ranks
from natlearn.training.faults import fault_point
from natlearn.training.loggers import check_logger, open_logger
from natlearn.training.nonfinite import (
    NonFiniteBatch,
    check_finite,
    largest_gradient,
    stop_or_skip,
    weights_finite,
)
from natlearn.training.run import EpochState, Run, build_run
from natlearn.training.schedule import epoch_generator, learning_rate
from natlearn.training.stats import StepSums
from natlearn.training.summary import describe_epoch, start_up_summary

__all__ = [
    "TrainResult",
    "run_epoch",
    "train",
    "train_step",
]

_SHOW_EVERY = 25  # steps between progress-bar statistics: each one waits for the device


@dataclass
class TrainResult:
    """A finished (or resumed-and-finished) run."""

    model: Network
    objective: Objective
    config: Config
    run_dir: Path
    history: list[dict] = field(default_factory=list)


def train(config: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a network with Noise As Targets (or the supervised baseline) and checkpoint every
    epoch.

    Under ``torchrun`` each process trains on its share of every global batch (see
    :mod:`natlearn.training.distributed`); rank 0 alone writes the run folder.

    Args:
        config: validated here; ``config.out`` is the run folder.
        resume: continue from the newest readable checkpoint in ``config.out`` (mid-epoch ones too).
        overwrite: delete an earlier run in ``config.out`` first.
    Returns:
        The trained model, the objective (with the NAT assignment), and the per-epoch history.
    """
    # The machine, then the data: every input is checked before the run folder changes.
    config.validate()
    check_logger(config.logger)  # a missing tensorboard or wandb is reported before any work
    ranks = init_ranks(config.device)
    resolve_device(config.device)  # a missing GPU is reported before any data is read
    run = build_run(config, pretraining_data(config), ranks)
    folder = run.folder

    # The run folder: rank 0 prepares it once every rank has looked at it.
    folder.check(resume, overwrite)
    ranks.barrier()
    if ranks.main:
        folder.prepare(overwrite)
    ranks.barrier()

    start_epoch, history, epoch_state = run.resume() if resume else (0, [], None)
    if ranks.main:
        if config.progress:
            print(start_up_summary(run, start_epoch), file=sys.stderr, flush=True)
        folder.write_config(config)
        steps_done = start_epoch * run.steps_per_epoch + (epoch_state.step if epoch_state else 0)
        run.logger = open_logger(config, folder.path, history, steps_done)

    try:
        for epoch in range(start_epoch, config.epochs):
            history.append(run_epoch(run, epoch, epoch_state or EpochState()))
            _end_epoch(run, epoch, history[-1])
            epoch_state = None
    finally:
        run.logger.close()
        run.diagnostics.close()
    if ranks.main and history:  # what a finished run leaves for evaluation and reuse
        copy_checkpoint(run.last_checkpoint, folder.last)
        export_backbone(folder.last, folder.backbone)
    ranks.barrier()
    return TrainResult(run.model, run.objective, config, folder.path, history)


def _end_epoch(run: Run, epoch: int, row: dict) -> None:
    """Log the epoch, checkpoint it (dropping its mid-epoch checkpoint) and prune old
    checkpoints."""
    run.last_checkpoint = run.folder.epoch_checkpoint(epoch + 1)
    if run.ranks.main:
        run.folder.append_log(row)
        run.logger.log_epoch((epoch + 1) * run.steps_per_epoch, row)
        save_checkpoint(run.last_checkpoint, run.snapshot(epoch + 1))
        remove_checkpoint(run.folder.partial)
        prune_checkpoints(run.folder.path, run.config.keep_last, run.config.keep_every)
        if run.config.progress:  # the diagnostics go to the log and the logger only
            hidden = {"epoch", *run.diagnostics.names}
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in hidden)
            tqdm.write(f"{describe_epoch(run, epoch)}: {shown}")
    run.ranks.barrier()


def run_epoch(run: Run, epoch: int, state: EpochState) -> dict:
    """Train one epoch (from ``state.step`` when continuing one) and return its log row."""
    config, ranks = run.config, run.ranks
    lr = learning_rate(config, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    generator = epoch_generator(config.seed, epoch)
    # Near-equal batches: no tiny last batch to upset BatchNorm or make the assignment trivial.
    num_batches = run.steps_per_epoch
    batch_ids = torch.tensor_split(torch.randperm(len(run.data), generator=generator), num_batches)
    if state.generator is not None:  # continuing this epoch mid-way
        generator.set_state(state.generator)
    carried = state.sums if ranks.main else {}
    trained = state.step - state.skipped
    sums = StepSums(run.statistics, run.resolved.device, carried, trained)
    shares = [ranks.shard(ids) for ids in batch_ids[state.step :]]
    batches = tqdm(
        run.data.batches(shares, run.resolved.device, config.workers),
        total=num_batches,
        initial=state.step,
        desc=describe_epoch(run, epoch),
        leave=False,
        disable=None if config.progress and ranks.main else True,
    )
    run.step_model.train()
    started = time.perf_counter() - state.seconds
    for step, (ids, images) in enumerate(batches, start=state.step):
        rows = _global_rows(ranks, images, len(batch_ids[step]), run.data.may_drop)
        inputs = run.augment(images, generator, rows)
        # A skipped batch must not leave its statistics in BatchNorm's running buffers (evaluation
        # uses them).
        skip = config.on_nonfinite == "skip"
        buffers = [b.clone() for b in run.model.buffers()] if skip else None
        try:
            sums.add(train_step(run, ids, inputs, rows, epoch))
        except NonFiniteBatch as bad:
            _skip_batch(run, bad.what, epoch, step, buffers)
            state.skipped += 1
        state.step = step + 1
        if state.step % _SHOW_EVERY == 0 or state.step == num_batches:
            _read_back(run, batches, sums, epoch, state, lr)
        fault_point(f"after-step:{epoch + 1}:{step + 1}")
        every = config.checkpoint_every_steps
        if every and state.step % every == 0 and state.step < num_batches:
            state.seconds, state.generator = time.perf_counter() - started, generator.get_state()
            _save_mid_epoch(run, epoch, state, sums)
    run.objective.check()
    if not weights_finite(run.model):
        broken = "weights or BatchNorm statistics"
        stop_or_skip(config, broken, epoch, num_batches - 1, run.last_checkpoint, recoverable=False)
    return _epoch_row(run, epoch, state, sums, lr, time.perf_counter() - started)


def _save_mid_epoch(run: Run, epoch: int, state: EpochState, sums: StepSums) -> None:
    """The mid-epoch checkpoint (``checkpoint_every_steps``): the run's snapshot and where the
    epoch stands (``state``, with the statistic sums over every rank)."""
    state.sums = sums.over_ranks(run.ranks)
    if run.ranks.main:
        checkpoint = {**run.snapshot(epoch), "progress": dataclasses.asdict(state)}
        save_checkpoint(run.folder.partial, checkpoint)
    run.ranks.barrier()


def _epoch_row(
    run: Run, epoch: int, state: EpochState, sums: StepSums, lr: float, seconds: float
) -> dict:
    """The epoch's log row: the statistics' means over every rank's trained steps, and its time."""
    num_batches = run.steps_per_epoch
    trained = max(1, num_batches - state.skipped)
    totals = sums.over_ranks(run.ranks)  # every rank's steps, reduced once per epoch
    return {
        "epoch": epoch + 1,
        **{name: total / run.ranks.world_size / trained for name, total in totals.items()},
        "skipped_batches": state.skipped,
        "lr": lr,
        "seconds": seconds,
        "images_per_s": len(run.data) / seconds,
        "step_ms": 1000 * seconds / num_batches,
    }


def train_step(
    run: Run, ids: torch.Tensor, inputs: torch.Tensor, rows: tuple[int, int], epoch: int
) -> dict[str, torch.Tensor]:
    """One step on this rank's images ``ids`` (b,) with augmented ``inputs`` (b, C, S, S), rows
    ``rows`` of the global batch: forward, re-assignment (in the epochs that do it), loss to the new
    targets, step.

    Returns the step's statistics as 0-dim device tensors. Raises :class:`NonFiniteBatch` before the
    optimizer steps if the outputs, the loss or the gradients are not finite.
    """
    layout = memory_format(run.resolved.device, run.config.channels_last)
    with autocast(run.resolved.device, run.resolved.precision):
        outputs = run.step_model(inputs.contiguous(memory_format=layout))
    check_finite("outputs", outputs, run.ranks)
    stats = {}
    if run.objective.reassigns(epoch):
        stats = _reassign(run, ids, outputs.detach(), rows)
    loss, loss_stats = run.objective.loss(ids, outputs, rows)
    check_finite("loss", loss, run.ranks)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    check_finite("gradients", largest_gradient(run.model))
    diagnostics = run.diagnostics.step()
    run.optimizer.step()
    return {**stats, **loss_stats, **diagnostics}


def _read_back(
    run: Run, batches: tqdm, sums: StepSums, epoch: int, state: EpochState, lr: float
) -> None:
    """Show the running means on the progress bar, and log the means since the last read-back as
    the per-step scalars: one read-back of the statistics, made only if either wants it."""
    if batches.disable and not run.logger.steps:
        return
    means, recent = sums.read(state.step - state.skipped)
    if not batches.disable:
        shown = ("loss", "cosine", "train_accuracy")
        batches.set_postfix({name: f"{means[name]:.4f}" for name in shown if name in means})
    if run.logger.steps and recent:
        if not run.objective.reassigns(epoch):  # no re-assignment: nothing to log of it
            recent = {name: value for name, value in recent.items() if name not in _REASSIGNMENT}
        run.logger.log_step(epoch * run.steps_per_epoch + state.step, {**recent, "lr": lr})


_REASSIGNMENT = ("reassigned", "assign_ms")  # the statistics of _reassign


def _reassign(
    run: Run, ids: torch.Tensor, outputs: torch.Tensor, rows: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Re-assign the batch's targets; the fraction that changed and the milliseconds it took (device
    work still queued before it is waited for first, so it is not counted)."""
    if outputs.is_cuda:
        torch.cuda.synchronize(outputs.device)
    started = time.perf_counter()
    changed = run.objective.reassign(ids, outputs, rows)
    milliseconds = 1000 * (time.perf_counter() - started)
    as_tensor = functools.partial(torch.tensor, device=outputs.device)
    return {"reassigned": as_tensor(changed), "assign_ms": as_tensor(milliseconds)}


def _skip_batch(
    run: Run, what: str, epoch: int, step: int, buffers: list[torch.Tensor] | None
) -> None:
    """Undo a non-finite batch (its BatchNorm statistics, its gradients), or stop the run
    (stop_or_skip)."""
    for buffer, saved in zip(run.model.buffers(), buffers or [], strict=False):
        buffer.copy_(saved)
    recoverable = buffers is None or not run.ranks.any(not weights_finite(run.model))
    stop_or_skip(run.config, what, epoch, step, run.last_checkpoint, recoverable)
    run.optimizer.zero_grad(set_to_none=True)


def _global_rows(
    ranks: Ranks, delivered: torch.Tensor, planned: int, may_drop: bool
) -> tuple[int, int]:
    """(first row, size) of this rank's share in the global batch. Shares are tensor_split's of the
    planned batch, unless streamed images may have been dropped as unreadable: then the batch is
    what was delivered (the ranks exchange what they got), so one process and N ranks draw the
    same crops for the same images."""
    if not may_drop:
        return ranks.first_row(planned), planned
    return ranks.rows_of(len(delivered), delivered.device)
