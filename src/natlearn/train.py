"""The training loop. Per batch, as in the paper: forward, (every few epochs) re-assign the batch's
targets among its images, square loss to the new targets, SGD step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from natlearn.assignment import Assignment
from natlearn.checkpoint import PARTIAL_NAME, latest_checkpoint, prune_checkpoints, remove_checkpoint, rng_state, save_checkpoint, set_rng_state
from natlearn.config import RESUME_LOCKED, Config, apply_overrides
from natlearn.data import ImageDataset, StreamingFolder, augment, require_labels
from natlearn.devices import resolve_device
from natlearn.distributed import Ranks, init_ranks, sync_batchnorm
from natlearn.errors import NatlearnError
from natlearn.faults import fault_point
from natlearn.files import atomic_write
from natlearn.loss import softmax_loss, square_loss
from natlearn.models import Network, network_for
from natlearn.targets import NoiseTargets

__all__ = ["NoiseAsTargets", "Supervised", "TrainResult", "build_model", "pretraining_data", "train", "resolve_device"]


def _rank_loss(per_row: torch.Tensor, reduction: str, ranks: Ranks, global_batch: int) -> torch.Tensor:
    """Reduce this rank's per-row losses so that DDP's average over ranks gives the one-process gradient
    of the whole global batch: sum * N / B for ``mean``, sum * N for ``sum`` (exact for uneven shares)."""
    if ranks.world_size == 1:
        return per_row.sum() if reduction == "sum" else per_row.mean()
    scale = ranks.world_size / (global_batch if reduction == "mean" else 1)
    return per_row.sum() * scale


class NoiseAsTargets:
    """The NAT objective for one batch: optional re-assignment, then the loss to the new targets.

    Holds the fixed targets and the image -> target assignment (the only state that grows with n).
    """

    def __init__(self, config: Config, n: int, ranks: Ranks | None = None):
        k = config.check_dataset_size(n)
        self.ranks = ranks or Ranks()
        self.targets = NoiseTargets(k, config.dim, seed=config.seed, kind=config.targets, num_clusters=config.num_clusters)
        self.assignment = Assignment(n, k, seed=config.seed, spare_per_batch=config.spare_targets)
        self.reassign_every, self.assign_block = config.reassign_every, config.assign_block
        self.loss_kind, self.reduction, self.temperature = config.resolved_loss(), config.loss_reduction, config.temperature

    def reassigns(self, epoch: int) -> bool:
        return self.reassign_every > 0 and epoch % self.reassign_every == 0

    def __call__(
        self, ids: torch.Tensor, outputs: torch.Tensor, epoch: int, rows: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of this rank's images ``ids`` (outputs (b, d)), rows ``rows = (first, total)`` of the global batch
        (default (0, b): one process), and statistics: loss per image, cosine to the own target, fraction re-assigned."""
        first, global_batch = rows or (0, len(ids))
        seconds = 0.0
        if self.reassigns(epoch):
            if outputs.is_cuda:  # time the assignment, not the forward pass still queued on the GPU
                torch.cuda.synchronize(outputs.device)
            started = time.perf_counter()
            batch_targets, reassigned = self._reassign_global(ids, outputs.detach())
            seconds = time.perf_counter() - started
        else:
            reassigned = 0.0
            # The softmax loss scores each image against every target of the global batch.
            batch_ids = self.ranks.gather(ids.to(outputs.device)) if self.loss_kind == "softmax" else ids
            batch_targets = self.targets[self.assignment[batch_ids].to(outputs.device)]
        offset = first if len(batch_targets) > len(ids) else 0  # batch_targets: the global batch's, or this rank's only
        mine = torch.arange(offset, offset + len(ids), device=outputs.device)
        targets = batch_targets[mine]
        outputs = outputs.float()
        if self.loss_kind == "square":
            per_row = square_loss(outputs, targets, reduction="none")
        else:
            per_row = softmax_loss(outputs, batch_targets, mine, self.temperature, reduction="none")
        loss = _rank_loss(per_row, self.reduction, self.ranks, global_batch)
        stats = {"loss": float(per_row.detach().mean()), "cosine": float((outputs.detach() * targets).sum(dim=1).mean())}
        return loss, {**stats, "reassigned": reassigned, "assign_ms": 1000 * seconds}

    def reassign(self, ids: torch.Tensor, outputs: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Re-assign the global batch; returns this rank's (b, d) new targets and the fraction of the global
        batch whose target changed."""
        batch_targets, changed = self._reassign_global(ids, outputs)
        sizes = self.ranks.gather(torch.tensor([len(ids)], device=outputs.device)).cpu()
        return self.ranks.my_rows(batch_targets, sizes), changed

    def _reassign_global(self, ids: torch.Tensor, outputs: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Re-assign the global batch in blocks of at most ``assign_block`` images; returns the (B, d) new targets
        of the whole global batch (rank order) and the fraction whose target changed. Under torchrun rank 0
        solves the gathered batch and broadcasts the choices; the other ranks replay them."""
        all_ids, all_outputs = self.ranks.gather(ids.to(outputs.device)).cpu(), self.ranks.gather(outputs.float())
        blocks = math.ceil(len(all_ids) / self.assign_block) if self.assign_block else 1
        id_blocks, output_blocks = all_ids.tensor_split(blocks), all_outputs.tensor_split(blocks)
        if self.ranks.main:
            results = [self.assignment.reassign(i, o, self.targets) for i, o in zip(id_blocks, output_blocks, strict=True)]
            changed = sum(r.changed * len(r.targets) for r in results) / len(all_ids)
            if self.ranks.world_size == 1:
                return torch.cat([r.targets for r in results]), changed
            chosen = self.ranks.broadcast(torch.cat([r.chosen for r in results]))
        else:
            chosen = self.ranks.broadcast(torch.empty(len(all_ids), dtype=torch.int64))
            choices = chosen.tensor_split(blocks)
            changed = sum(self.assignment.replay(i, c) * len(i) for i, c in zip(id_blocks, choices, strict=True)) / len(all_ids)
        return self.targets[self.assignment[all_ids].to(outputs.device)], changed

    def state_dict(self) -> dict:
        return {"assignment": self.assignment.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.assignment.load_state_dict(state["assignment"])

    def check(self) -> None:
        self.assignment.check()
        self.ranks.check_identical(torch.cat([self.assignment.image_to_target, self.assignment.spare]), "image -> target assignment")


class Supervised:
    """The same network trained on labels: cross-entropy on logits, or the square loss to fixed
    per-class sphere targets (the paper's softmax-vs-square ablation)."""

    def __init__(self, config: Config, dataset: ImageDataset | StreamingFolder, ranks: Ranks | None = None):
        self.labels, self.ranks = require_labels(dataset, "objective=supervised"), ranks or Ranks()
        self.loss_kind, self.reduction = config.resolved_loss(), config.loss_reduction
        self.class_targets = NoiseTargets(len(dataset.classes), config.dim, seed=config.seed)

    def __call__(
        self, ids: torch.Tensor, outputs: torch.Tensor, epoch: int, rows: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        labels = self.labels[ids].to(outputs.device)
        outputs = outputs.float()
        if self.loss_kind == "square":
            per_row = square_loss(outputs, self.class_targets[labels], reduction="none")
            scores = outputs.detach() @ self.class_targets[torch.arange(self.class_targets.k, device=outputs.device)].T
        else:
            per_row = F.cross_entropy(outputs, labels, reduction="none")
            scores = outputs.detach()
        loss = _rank_loss(per_row, self.reduction, self.ranks, (rows or (0, len(ids)))[1])
        return loss, {"loss": float(per_row.detach().mean()), "train_accuracy": float((scores.argmax(dim=1) == labels).float().mean())}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def check(self) -> None:
        pass


@dataclass
class TrainResult:
    """A finished (or resumed-and-finished) run."""

    model: Network
    objective: NoiseAsTargets | Supervised
    config: Config
    run_dir: Path
    history: list[dict] = field(default_factory=list)


def pretraining_data(config: Config) -> ImageDataset | StreamingFolder:
    """The images ``config`` pre-trains on: its training split, or a seeded random ``subset`` of it."""
    dataset = config.load_data("pretrain")
    if not config.subset:
        return dataset
    if config.subset > len(dataset):
        raise NatlearnError(f"subset={config.subset} is larger than the data set (n={len(dataset)}); lower subset or set subset=0 (all)")
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, len(dataset)]).generate_state(1)[0]))
    return dataset.subset(torch.randperm(len(dataset), generator=generator)[: config.subset].sort().values)


def build_model(config: Config, dataset: ImageDataset | StreamingFolder) -> Network:
    """The network for ``config`` on ``dataset``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    return network_for(config, **network_spec(config, dataset))


def network_spec(config: Config, dataset: ImageDataset | StreamingFolder) -> dict:
    """What, besides the config, fixes the network's shape; stored in checkpoints to rebuild it."""
    return {
        "channels": dataset.channels,
        "image_size": config.crop_size or dataset.image_size,
        "num_classes": len(dataset.classes),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
    }


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


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batch order and augmentation of an epoch depend on (seed, epoch) only: resumes replay them."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


_RUN_FILES = ("checkpoints", "log.jsonl", "config.yaml")


def _holds_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return (folder / PARTIAL_NAME).is_file() or any(folder.glob("epoch_*.pt"))


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    # A folder with only config.yaml and an empty checkpoints/ (a run that failed before its first checkpoint
    # and log line) holds nothing to resume or to lose: a plain re-run may reuse it.
    if not (resume or overwrite) and ((run_dir / "log.jsonl").exists() or _holds_checkpoint(run_dir)):
        raise NatlearnError(f"run folder {run_dir} already holds a run; pass --resume to continue it or --overwrite to start over")
    if resume and not _holds_checkpoint(run_dir):  # before _prepare_run_dir creates anything
        raise NatlearnError(f"nothing to resume: no checkpoint in {run_dir / 'checkpoints'}; drop --resume to start a new run")


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    if overwrite:
        for path in (run_dir / name for name in _RUN_FILES):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NatlearnError(f"cannot create run folder {run_dir}: {error.strerror}; choose another out=") from None
    for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # left by a run killed while writing
        stale.unlink()


def check_resumable(config: Config, saved: dict) -> None:
    # A key the checkpoint lacks (written before it existed) had its default; auto values compare resolved.
    fields = Config().to_dict()
    before = apply_overrides(Config(), {key: value for key, value in saved.items() if key in fields})
    resolved = {"loss": Config.resolved_loss, "train_split": Config.resolved_train_split}

    def value(c: Config, key: str) -> object:
        return resolved[key](c) if key in resolved else getattr(c, key)

    differ = [
        f"{key} (checkpoint {getattr(before, key)!r}, now {getattr(config, key)!r})"
        for key in RESUME_LOCKED
        if value(before, key) != value(config, key)
    ]
    if differ:
        raise NatlearnError(
            f"cannot resume: the config differs from the checkpoint's in {'; '.join(differ)}; "
            "keep the checkpoint's values or start a new run in another out="
        )


def _read_log(log_path: Path, epochs_done: int, truncate: bool) -> list[dict]:
    """The log lines of epochs the checkpoint covers; ``truncate`` drops the rest from the file (a crash may
    have logged one more)."""
    if not log_path.exists():
        return []
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row["epoch"] <= epochs_done]
    if truncate:
        log_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@dataclass
class _EpochProgress:
    """How far an epoch got: what a mid-epoch checkpoint needs to continue it exactly."""

    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0
    generator: torch.Tensor | None = None


def _all_finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all())


def _global_rows(ranks: Ranks, delivered: torch.Tensor, planned: int, may_drop: bool) -> tuple[int, int]:
    """(first row, size) of this rank's share in the global batch. Shares are tensor_split's of the planned batch,
    unless streamed images may have been dropped as unreadable: then the ranks exchange what they really got."""
    if ranks.world_size == 1 or not may_drop:
        return ranks.first_row(planned), planned
    sizes = ranks.gather(torch.tensor([len(delivered)], device=delivered.device)).flatten().tolist()
    return sum(sizes[: ranks.rank]), sum(sizes)


def _gradients_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad.detach().abs().amax() for p in model.parameters() if p.grad is not None]
    return not grads or _all_finite(torch.stack(grads))


def _weights_finite(model: torch.nn.Module) -> bool:
    """Parameters and floating-point buffers (BatchNorm running statistics, which evaluation uses) are finite."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return _all_finite(torch.stack([t.detach().abs().amax() for t in tensors]))


def _nonfinite(config: Config, what: str, epoch: int, step: int, last_path: Path | None, recoverable: bool = True) -> None:
    """Stop the run with a one-line error, unless ``on_nonfinite=skip`` and the weights are still finite (then
    the batch is skipped; once the weights or BatchNorm statistics are broken every later batch would be too)."""
    if config.on_nonfinite == "stop" or not recoverable:
        where = f"last good checkpoint: {last_path}" if last_path else "no checkpoint written yet"
        broken = "" if recoverable else " (the weights or BatchNorm statistics are no longer finite, so skipping cannot continue)"
        raise NatlearnError(
            f"non-finite {what} (NaN or inf) at epoch {epoch + 1}, step {step + 1}{broken}; {where}; "
            "lower lr, check the data, or set on_nonfinite=skip"
        )
    warnings.warn(f"skipping batch {step + 1} of epoch {epoch + 1}: non-finite {what}", stacklevel=3)


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
    config.validate()
    ranks = init_ranks(config.device)
    device = resolve_device(config.device)
    if device.type == "cuda" and ranks.world_size > 1:
        device = torch.device("cuda", ranks.local_rank)
    if config.batch_size < 2 * ranks.world_size:
        raise NatlearnError(f"batch_size={config.batch_size} is the global batch: it needs at least 2 images per rank ({ranks.world_size} ranks)")
    dataset = pretraining_data(config)
    objective = NoiseAsTargets(config, len(dataset), ranks) if config.objective == "nat" else Supervised(config, dataset, ranks)
    model = sync_batchnorm(build_model(config, dataset).to(device), ranks, device)
    run_dir = Path(config.out)
    _check_run_dir(run_dir, resume, overwrite)
    ranks.barrier()  # every rank has looked before rank 0 changes anything
    if ranks.main:
        _prepare_run_dir(run_dir, overwrite)  # only once every input has been checked: no stray files
    ranks.barrier()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    start_epoch, history, last_path, epoch_state = 0, [], None, None
    if resume:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise NatlearnError(f"nothing to resume: no readable checkpoint in {run_dir / 'checkpoints'}; drop --resume to start a new run")
        last_path, state = found
        check_resumable(config, state["config"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
        start_epoch = state["epoch"]
        epoch_state = _EpochProgress(**state["progress"]) if "progress" in state else None
        history = _read_log(run_dir / "log.jsonl", start_epoch, truncate=ranks.main)
    if ranks.main:
        config_text = yaml.safe_dump({**config.to_dict(), "widths": list(config.widths)}, sort_keys=False)
        atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(config_text))
    step_model = _fast_model(model, config, ranks, device)

    def snapshot(epochs_done: int) -> dict:
        return {
            "epoch": epochs_done,
            "config": config.to_dict(),
            "network": network_spec(config, dataset),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "objective": objective.state_dict(),
            "rng": rng_state(),
        }

    size = config.crop_size or dataset.image_size
    num_batches = math.ceil(len(dataset) / config.batch_size)
    partial_path = run_dir / "checkpoints" / PARTIAL_NAME
    autocast = _autocast(config, device)
    layout = torch.channels_last if config.channels_last and device.type == "cuda" else torch.contiguous_format
    may_drop = isinstance(dataset, StreamingFolder) and dataset.on_bad_image == "skip"  # unreadable images leave batches
    for epoch in range(start_epoch, config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = _epoch_generator(config.seed, epoch)
        # Near-equal batches: no tiny last batch to upset BatchNorm or make the assignment trivial.
        batch_ids = torch.tensor_split(torch.randperm(len(dataset), generator=generator), num_batches)
        epoch_state = epoch_state or _EpochProgress()
        if epoch_state.generator is not None:  # continuing this epoch mid-way
            generator.set_state(epoch_state.generator)
        step_model.train()
        reassigns = isinstance(objective, NoiseAsTargets) and objective.reassigns(epoch)
        desc = f"epoch {epoch + 1}/{config.epochs}" + (" (re-assign)" if reassigns else "")
        batches = tqdm(
            dataset.batches([ranks.shard(ids) for ids in batch_ids[epoch_state.step :]], device, config.workers),
            total=num_batches, initial=epoch_state.step, desc=desc, leave=False, disable=None if config.progress and ranks.main else True,
        )  # fmt: skip
        started = time.perf_counter() - epoch_state.seconds
        for step, (ids, images) in enumerate(batches, start=epoch_state.step):
            rows = _global_rows(ranks, images, len(batch_ids[step]), may_drop)  # this rank's rows of the global batch
            inputs = augment(images, size, generator, config.crop, config.crop_padding, config.crop_scale, config.flip, rows)
            # A skipped batch must not leave its statistics in BatchNorm's running buffers (evaluation uses them).
            buffers = [b.clone() for b in model.buffers()] if config.on_nonfinite == "skip" else None
            with autocast:
                outputs = step_model(inputs.contiguous(memory_format=layout))
            what = "outputs" if ranks.any(not _all_finite(outputs)) else None
            loss, stats = (None, {}) if what else objective(ids, outputs, epoch, rows)
            if what is None and ranks.any(not _all_finite(loss)):
                what = "loss"
            if what is None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not _gradients_finite(model):  # DDP all-reduced them: the same answer on every rank, no extra collective
                    what = "gradients"
            if what:
                for buffer, saved in zip(model.buffers(), buffers or [], strict=False):
                    buffer.copy_(saved)
                _nonfinite(config, what, epoch, step, last_path, recoverable=buffers is None or not ranks.any(not _weights_finite(model)))
                optimizer.zero_grad(set_to_none=True)
                epoch_state.skipped += 1
            else:
                optimizer.step()
                names = sorted(stats)
                means = ranks.sum(torch.tensor([float(stats[k]) for k in names])) / ranks.world_size
                for key, value in zip(names, means.tolist(), strict=True):
                    epoch_state.sums[key] = epoch_state.sums.get(key, 0.0) + value
                trained = step + 1 - epoch_state.skipped
                shown = [k for k in ("loss", "cosine", "train_accuracy") if k in epoch_state.sums]
                batches.set_postfix({k: f"{epoch_state.sums[k] / trained:.4f}" for k in shown})
            epoch_state.step = step + 1
            fault_point(f"after-step:{epoch + 1}:{step + 1}")
            if config.checkpoint_every_steps and epoch_state.step % config.checkpoint_every_steps == 0 and epoch_state.step < num_batches:
                epoch_state.seconds, epoch_state.generator = time.perf_counter() - started, generator.get_state()
                if ranks.main:
                    save_checkpoint(partial_path, {**snapshot(epoch), "progress": dataclasses.asdict(epoch_state)})
                ranks.barrier()
        objective.check()
        if not _weights_finite(model):
            _nonfinite(config, "weights or BatchNorm statistics", epoch, num_batches - 1, last_path, recoverable=False)
        seconds = time.perf_counter() - started
        trained = max(1, num_batches - epoch_state.skipped)
        row = {
            "epoch": epoch + 1,
            **{key: value / trained for key, value in epoch_state.sums.items()},
            "skipped_batches": epoch_state.skipped,
            "lr": lr,
            "seconds": seconds,
            "images_per_s": len(dataset) / seconds,
            "step_ms": 1000 * seconds / num_batches,
        }
        history.append(row)
        last_path = run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt"
        if ranks.main:
            with open(run_dir / "log.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
            save_checkpoint(last_path, snapshot(epoch + 1))
            remove_checkpoint(partial_path)
            prune_checkpoints(run_dir, config.keep_last, config.keep_every)
            if config.progress:
                tqdm.write(f"{desc}: " + ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch"))
        ranks.barrier()
        epoch_state = None
    return TrainResult(model, objective, config, run_dir, history)


def _autocast(config: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the network (precision=bf16, or auto on a GPU); the loss and assignment run in fp32."""
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _fast_model(model: Network, config: Config, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """What the training step calls: the network in channels-last layout (GPUs), compiled, and wrapped in DDP
    when several ranks train. ``model`` itself stays the plain network that checkpoints save."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    step_model: torch.nn.Module = model
    if ranks.world_size > 1:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(step_model) if config.compile else step_model
