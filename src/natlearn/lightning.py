"""Noise As Targets in PyTorch Lightning (``pip install 'natlearn[lightning]'``).

:class:`NATModule` trains any backbone with :class:`~natlearn.nat.module.NATLoss`;
:class:`OnlineKNN` reports a weighted k-NN top-1 on labelled images as it trains (solo-learn's
online k-NN)::

    model = NATModule(backbone, num_images=len(train), dim=128)
    trainer = L.Trainer(max_epochs=100, callbacks=[OnlineKNN(bank, queries)])
    trainer.fit(model, DataLoader(IndexedDataset(train), 256, shuffle=True, drop_last=True))

The training loader yields ``(images, ids)``: each image with its index in the data set
(:class:`~natlearn.data.indexed.IndexedDataset` turns any map-style data set into such pairs;
natlearn's own data sets already yield them). Under ``Trainer(strategy="ddp")`` the loss gathers
the global batch, so the assignment stays one permutation, identical on every rank, and each
step's gradient is the one-process gradient of the global batch. BatchNorm statistics stay per rank
unless ``Trainer(sync_batchnorm=True)`` (GPUs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

try:
    import lightning as L
except ImportError as error:  # an optional extra
    raise ImportError(
        "natlearn.lightning needs PyTorch Lightning: pip install 'natlearn[lightning]'"
    ) from error

from natlearn.evaluate.probes.knn import knn_classify
from natlearn.nat.module import NATLoss
from natlearn.training.distributed import Ranks

__all__ = ["NATModule", "OnlineKNN"]


class NATModule(L.LightningModule):
    """A backbone trained with Noise As Targets.

    Each training step re-assigns the batch's targets in the epochs ``NATLoss`` re-assigns in
    (``current_epoch % reassign_every == 0``, so the schedule resumes where a checkpoint left
    it), then takes the square loss to the targets the images hold. The loss is a submodule: its
    assignment goes into the module's ``state_dict``, hence into every Lightning checkpoint, and
    its target settings (seed included) are hyper-parameters, so
    ``NATModule.load_from_checkpoint(path, backbone=net)`` rebuilds the same targets; a checkpoint
    made with other targets (seed, n, k, d) is refused. A subclass that overrides ``setup`` calls
    ``super().setup(stage)``: that is where the loss joins DDP's process group.

    Args:
        backbone: images (b, ...) -> outputs (b, dim); L2-normalised by the loss.
        num_images: n, the size of the training set; the loader's ids index it.
        dim: d, the dimension of the outputs and of the targets.
        lr: SGD's learning rate (override ``configure_optimizers`` for another optimizer).
        momentum: SGD's momentum.
        weight_decay: SGD's weight decay.
        **nat_loss: the rest of ``NATLoss``'s settings (``reassign_every=3``, ``seed=0``, ``k``,
            ``loss``, ...).

    Batches: ``(images, ids)`` with ids (b,) int64 indices into the training set.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_images: int,
        dim: int,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        **nat_loss: Any,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.nat_loss = NATLoss(num_images, dim, **nat_loss)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(b, ...) images -> (b, dim) outputs (before the loss's normalisation)."""
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        # The process group starts after __init__ (in fit): the loss joins it here, so that it
        # gathers the global batch under DDP.
        self.nat_loss.nat.ranks = Ranks.current()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, ids = batch
        loss = self.nat_loss(self(images), ids, self.current_epoch)
        statistics = self.nat_loss.statistics  # this rank's mean loss and cosine to the targets
        self.log_dict(
            {"nat_loss": statistics["loss"], "nat_cosine": statistics["cosine"]},
            prog_bar=True,
            on_step=False,
            on_epoch=True,  # averaged over the epoch and the ranks once, at its end
            sync_dist=True,
        )
        return loss  # scaled under DDP so that its average over ranks is the global batch's

    def on_train_epoch_end(self) -> None:
        # A permutation, and the same on every rank (each rank compares a hash with rank 0's).
        self.nat_loss.nat.check()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            weight_decay=self.hparams.weight_decay,
        )

    def targets_key(self) -> dict[str, Any]:
        """What fixes the vectors the assignment's target ids stand for."""
        targets, assignment = self.nat_loss.nat.targets, self.nat_loss.nat.assignment
        return {
            "n": assignment.n,
            "k": targets.k,
            "d": targets.d,
            "seed": targets.seed,
            "kind": targets.kind,
            "num_clusters": targets.num_clusters,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nat_targets"] = self.targets_key()  # the assignment is in the state_dict

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose assignment is over other targets (another seed, n, k or d):
        its target ids would silently stand for other vectors here."""
        saved, here = checkpoint.get("nat_targets", {}), self.targets_key()
        differ = [
            f"{key}={saved[key]!r} (here {here[key]!r})" for key in saved if saved[key] != here[key]
        ]
        if differ:
            raise ValueError(
                "the checkpoint's NAT targets differ from this module's: " + ", ".join(differ)
            )


class OnlineKNN(L.Callback):
    """Weighted k-NN top-1 (InstDisc/DINO's, natlearn's ``knn_classify``) of the module's outputs,
    logged as ``knn_top1`` at the end of every ``every_n_epochs``-th training epoch.

    Args:
        bank: labelled images that vote, batches of ``(images, labels)``.
        queries: labelled validation images to classify, batches of ``(images, labels)``.
        k: how many of the most cosine-similar bank images vote for a query.
        temperature: each votes with weight exp(cosine / temperature).
        every_n_epochs: how often to measure.

    Under DDP every rank computes the same number (the loaders are not sharded).
    """

    def __init__(
        self,
        bank: DataLoader,
        queries: DataLoader,
        k: int = 20,
        temperature: float = 0.07,
        every_n_epochs: int = 1,
    ):
        self.bank, self.queries = bank, queries
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        bank_x, bank_y = self._embed(pl_module, self.bank)
        query_x, query_y = self._embed(pl_module, self.queries)
        result = knn_classify(
            bank_x, bank_y, query_x, query_y, k=self.k, temperature=self.temperature,
            device=pl_module.device,
        )  # fmt: skip
        pl_module.log("knn_top1", result.top1, prog_bar=True, sync_dist=True)

    @staticmethod
    @torch.no_grad()
    def _embed(module: L.LightningModule, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, d) outputs in eval mode and (N,) labels of every batch of ``loader``."""
        was_training = module.training
        module.eval()
        outputs, labels = [], []
        for images, targets in loader:
            outputs.append(module(images.to(module.device)).float().cpu())
            labels.append(torch.as_tensor(targets))
        module.train(was_training)
        return torch.cat(outputs), torch.cat(labels)
