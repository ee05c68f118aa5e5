"""Scenarios run under ``torchrun --nproc-per-node 2`` (gloo) by tests/test_distributed.py; exit 0 =
passed."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from natlearn.config import Config
from natlearn.errors import NatlearnError
from natlearn.nat.assignment import Assignment
from natlearn.nat.module import NATLoss
from natlearn.nat.objective import NoiseAsTargets
from natlearn.training.distributed import init_ranks


def global_reassignment() -> None:
    """Each rank passes its shard of a global batch; both must end with the assignment one process
    computes on the whole batch, and get back their own rows of its targets."""
    ranks = init_ranks("cpu")
    config = Config(dim=8, k=80, spare_targets=6, assign_block=16, seed=3, batch_size=36)
    n, batch = 64, 36
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:batch]
    outputs = torch.nn.functional.normalize(
        torch.randn(batch, 8, generator=torch.Generator().manual_seed(2)), dim=1
    )
    reference = NoiseAsTargets.from_config(config, n)  # one process, whole batch
    expected_changed = reference.reassign(ids, outputs)
    distributed = NoiseAsTargets.from_config(config, n, ranks)
    mine = ranks.shard(torch.arange(batch))  # shares of 18 rows
    changed = distributed.reassign(ids[mine], outputs[mine], (ranks.first_row(batch), batch))
    assert changed == expected_changed
    assert torch.equal(distributed.assignment.image_to_target, reference.assignment.image_to_target)
    assert torch.equal(distributed.assignment.spare, reference.assignment.spare)
    distributed.check()  # the hash comparison passes when the ranks agree


def one_rank_solves() -> None:
    """Rank 1's solver breaks ties differently (as another GPU model's arithmetic could): the ranks
    must still hold rank 0's assignment, because only rank 0 solves and the others replay its
    choices."""
    import natlearn.nat.assignment

    ranks = init_ranks("cpu")
    if ranks.rank == 1:
        real = natlearn.nat.assignment.linear_sum_assignment

        def other_ties(cost, maximize=False):
            rows, cols = real(cost, maximize=maximize)
            return rows, cols[::-1].copy()

        natlearn.nat.assignment.linear_sum_assignment = other_ties
    config = Config(dim=8, k=70, spare_targets=4, assign_block=10, seed=5, batch_size=20)
    n, batch = 64, 20
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:batch]
    outputs = torch.nn.functional.normalize(
        torch.randn(batch, 8, generator=torch.Generator().manual_seed(2)), dim=1
    )
    distributed = NoiseAsTargets.from_config(config, n, ranks)
    mine = ranks.shard(torch.arange(batch))
    for _ in range(3):
        distributed.reassign(ids[mine], outputs[mine], (ranks.first_row(batch), batch))
    distributed.check()  # raises on every rank if rank 1 solved its own (different) problem


def ranks_disagree() -> None:
    """A rank whose assignment differs must make every rank stop with the error naming it."""
    ranks = init_ranks("cpu")
    objective = NoiseAsTargets.from_config(Config(dim=4, batch_size=4), 10, ranks)
    if ranks.rank == 1:
        objective.assignment = Assignment(10, seed=99)
    try:
        objective.check()
    except NatlearnError as error:
        assert (
            "ranks disagree on the image -> target assignment (ranks [1] differ from rank 0)"
            in str(error)
        ), str(error)
        return
    raise AssertionError("no error although the ranks' assignments differ")


def gathers_uneven_shards() -> None:
    ranks = init_ranks("cpu")
    rows = (
        torch.arange(5 + ranks.rank, dtype=torch.float64)[:, None].expand(-1, 3) + 100 * ranks.rank
    )
    gathered = ranks.gather(rows)
    assert gathered.shape == (11, 3) and gathered[5, 0] == 100 and gathered[-1, 0] == 105
    assert torch.equal(ranks.my_rows(gathered, torch.tensor([5, 6])), rows)


def nat_loss_gathers_the_global_batch() -> None:
    """NATLoss in a user's loop under torchrun, each rank with its own (uneven) share of a batch:
    the ranks must end with the assignment one process computes on the whole batch, and DDP's
    average of their losses must be the one-process loss of the whole batch."""
    ranks = init_ranks("cpu")
    n, batch, d = 64, 21, 8
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:batch]
    outputs = torch.randn(batch, d, generator=torch.Generator().manual_seed(2))
    nat_loss = NATLoss(n, d, reassign_every=1, seed=3)
    assert nat_loss.nat.ranks.world_size == 2, "NATLoss did not see the process group"
    mine = ranks.shard(torch.arange(batch))  # shares of 11 and 10 rows
    loss = nat_loss(outputs[mine], ids[mine], epoch=0)
    reference = NoiseAsTargets(n, d, seed=3, reassign_every=1)  # one process, whole batch
    unit = torch.nn.functional.normalize(outputs, dim=1)
    reference.reassign(ids, unit)
    expected, _ = reference.loss(ids, unit)
    assert torch.equal(
        nat_loss.nat.assignment.image_to_target, reference.assignment.image_to_target
    )
    averaged = (
        ranks.sum(loss.detach().reshape(1)) / ranks.world_size
    )  # what DDP's average trains on
    assert torch.allclose(averaged.float(), expected.detach().reshape(1), atol=1e-6), (
        averaged,
        expected,
    )


if __name__ == "__main__":
    scenarios = {
        "nat_loss_gathers_the_global_batch": nat_loss_gathers_the_global_batch,
        "global_reassignment": global_reassignment,
        "one_rank_solves": one_rank_solves,
        "ranks_disagree": ranks_disagree,
        "gathers_uneven_shards": gathers_uneven_shards,
    }
    scenarios[sys.argv[1]]()
    # Leave together: a rank that exits while the other still tears down gloo can abort ("terminate
    # called ...").
    dist.barrier()
    dist.destroy_process_group()
