"""Training on several processes (``torchrun``): which images each rank sees, and keeping the NAT
state identical.

Design. Every rank holds the whole image -> target assignment (8 bytes per image). Every rank draws
the same epoch permutation and the same global batches; rank r trains on the r-th contiguous shard
of each global batch. In a re-assignment epoch the ranks all-gather the batch's image ids and
outputs, so the global batch is held in the order a single process would hold it; rank 0 solves its
Hungarian problems (in ``assign_block`` blocks) and broadcasts the choices, which the other ranks
replay (:func:`natlearn.nat.assignment.reassign_global_batch`, with :class:`Ranks` as its process
group). A run on N ranks with per-rank batch b / N thus re-assigns exactly as one process with
batch b does, and the assignment is identical on every rank whatever their GPUs' rounding. Each
epoch the ranks compare a hash of their assignment and stop with an error if any differs.
BatchNorm statistics are taken over the global batch too (torch's SyncBatchNorm on GPUs;
:class:`GlobalBatchNorm` on CPUs, where SyncBatchNorm does not run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from natlearn.errors import NatlearnError

__all__ = ["Ranks", "GlobalBatchNorm", "init_ranks", "sync_batchnorm"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world_size`` training processes (1 and 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def current(cls) -> Ranks:
        """This process's place in an initialised ``torch.distributed`` group (one process if
        none)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints and logs and shows progress."""
        return self.rank == 0

    def shard(self, batch_ids: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (near-equal shares, rank order)."""
        return (
            batch_ids.tensor_split(self.world_size)[self.rank] if self.world_size > 1 else batch_ids
        )

    def first_row(self, batch_size: int) -> int:
        """Where this rank's :meth:`shard` starts in a global batch of ``batch_size``
        (tensor_split's sizes)."""
        base, extra = divmod(batch_size, self.world_size)
        return self.rank * base + min(self.rank, extra)

    def rows_of(self, count: int, device: torch.device) -> tuple[int, int]:
        """``(first, total)``: where this rank's ``count`` rows start in the global batch, and its
        size, whatever each rank's own batch holds (one all-gather of the counts under torchrun)."""
        if self.world_size == 1:
            return 0, count
        sizes = self.gather(torch.tensor([count], device=device)).flatten().tolist()
        return sum(sizes[: self.rank]), sum(sizes)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``rows`` (shares may differ in length by one) in rank order."""
        if self.world_size == 1:
            return rows
        sizes = [
            torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(self.world_size)
        ]
        dist.all_gather(sizes, torch.tensor([len(rows)], device=rows.device))
        longest = int(max(sizes))
        padded = torch.cat([rows, rows.new_zeros(longest - len(rows), *rows.shape[1:])])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[: int(size)] for part, size in zip(parts, sizes, strict=True)])

    def my_rows(self, rows: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a gathered tensor whose per-rank lengths are ``sizes``."""
        start = int(sizes[: self.rank].sum())
        return rows[start : start + int(sizes[self.rank])]

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``values`` on every rank (same shape and dtype everywhere; returned on the
        CPU)."""
        if self.world_size == 1:
            return values
        shared = values.to(self._device()).contiguous()
        dist.broadcast(shared, src=0)
        return shared.cpu()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (float64 on the CPU: gloo and NCCL agree on it)."""
        if self.world_size == 1:
            return values
        total = values.to(
            self._device(), torch.float64, copy=True
        )  # all_reduce works in place: not on the caller's
        dist.all_reduce(total)
        return total.cpu()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (so all ranks take the same
        branch)."""
        return flag if self.world_size == 1 else bool(self.sum(torch.tensor([float(flag)])) > 0)

    def check_identical(self, state: torch.Tensor, what: str) -> None:
        """Stop every rank with a clear error unless ``state`` (an int64 tensor) is identical on all
        ranks."""
        if self.world_size == 1:
            return
        weights = torch.arange(1, state.numel() + 1, dtype=torch.int64).mul_(
            0x9E3779B97F4A7C15 - 2**64
        )
        digest = torch.tensor(
            [int((state.flatten().cpu() * weights).sum()), int(state.sum())], dtype=torch.int64
        )
        digests = [torch.zeros_like(digest) for _ in range(self.world_size)]
        dist.all_gather(digests, digest.to(self._device()))
        differ = [r for r, d in enumerate(digests) if not torch.equal(d.cpu(), digests[0].cpu())]
        if differ:
            raise NatlearnError(
                f"ranks disagree on the {what} (ranks {differ} differ from rank 0); "
                "all ranks must run the same natlearn version, config and data: "
                "restart with --resume from the last checkpoint"
            )

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )


def init_ranks(device: str) -> Ranks:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on GPUs, gloo
    on CPUs. Without torchrun (or with one process) nothing is initialised."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_gpu = device != "cpu" and torch.cuda.is_available()
    if use_gpu:
        if ranks.local_rank >= torch.cuda.device_count():
            raise NatlearnError(
                f"local rank {ranks.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "lower --nproc-per-node"
            )
        torch.cuda.set_device(ranks.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo")
    return ranks


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(sum) with its gradient (also a sum over ranks: every rank's loss depends on every
    rank's input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch of every rank (CPU/gloo stand-in
    for SyncBatchNorm). Works on (N, C) and (N, C, H, W) inputs; its state_dict is a BatchNorm's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2-D or 4-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = x.new_tensor([x.numel() / x.shape[1]])
        totals = _SumOverRanks.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c, n = x.shape[1], totals[-1]
        mean = totals[:c] / n
        var = (totals[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1).clamp_min(1), self.momentum)
        shape = [1, c] + [1] * (x.dim() - 2)
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps) * self.weight.view(
            shape
        ) + self.bias.view(shape)


def sync_batchnorm(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch when several ranks train: torch's SyncBatchNorm on GPUs,
    GlobalBatchNorm otherwise."""
    if ranks.world_size == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            replacement = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement.to(device))
        else:
            sync_batchnorm(child, ranks, device)
    return model
