"""NATModule's test set-up, shared by tests/test_lightning.py and, run as a script under
``torchrun --nproc-per-node 2`` (gloo), the DDP half of its one-process comparison:
``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/lightning_ranks.py OUT``
trains with ``Trainer(strategy="ddp")`` and writes each rank's weights and assignment to
OUT/rank{r}.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

from natlearn import IndexedDataset
from natlearn.lightning import NATModule

N, BATCH, DIM = 512, 64, 16  # BATCH is the global batch: 2 ranks x 32
NAT = {"reassign_every": 2, "seed": 3}
DDP_EPOCHS = 3


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """N of scikit-learn's 8x8 digits in a fixed mixed order: (N, 1, 8, 8) in [0, 1], (N,)
    labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = torch.randperm(len(data.target), generator=torch.Generator().manual_seed(0))[:N]
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    return images[order], torch.tensor(data.target)[order]


def nat_module(**settings) -> NATModule:
    """A small MLP (no BatchNorm: its statistics would stay per rank on CPUs) with fixed initial
    weights."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, DIM))
    return NATModule(backbone, N, DIM, lr=0.1, **{**NAT, **settings})


def trainer(**settings) -> L.Trainer:
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(accelerator="cpu", deterministic=True, **{**quiet, **settings})


def indexed() -> IndexedDataset:
    return IndexedDataset(TensorDataset(digits()[0]))  # (image, index) pairs


def ddp(out: Path) -> None:
    """Each rank a batch of BATCH / 2 from the DistributedSampler Lightning puts in the loader
    (see :class:`GatheredOrder`)."""
    model = nat_module()
    run = trainer(strategy="ddp", devices=2, max_epochs=DDP_EPOCHS)
    run.fit(model, DataLoader(indexed(), batch_size=BATCH // 2, shuffle=True))
    assert model.nat_loss.nat.ranks.world_size == 2, "the loss did not join the process group"
    torch.save(
        {
            "weights": model.backbone.state_dict(),
            "assignment": model.nat_loss.nat.assignment.image_to_target,
        },
        out / f"rank{run.global_rank}.pt",
    )


class GatheredOrder(Sampler):
    """One process's order for the global batches 2 ranks train on: under DDP Lightning gives each
    rank a shuffling ``DistributedSampler`` (seed 0, reshuffled each epoch by ``set_epoch``), and
    global batch j is rank 0's j-th batch of BATCH / 2 followed by rank 1's, as the loss gathers
    them."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return N

    def __iter__(self):
        shares = []
        for rank in (0, 1):
            sampler = DistributedSampler(range(N), num_replicas=2, rank=rank, shuffle=True, seed=0)
            sampler.set_epoch(self.epoch)
            shares.append(list(sampler))
        half = BATCH // 2
        for start in range(0, N // 2, half):
            yield from shares[0][start : start + half] + shares[1][start : start + half]


if __name__ == "__main__":
    ddp(Path(sys.argv[1]))
