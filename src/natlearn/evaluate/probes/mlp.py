"""The paper's transfer protocol on frozen conv features: a fresh fc6-fc8 MLP."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from natlearn.config import resolve_device
from natlearn.evaluate.fit import fit_minibatches, standardiser
from natlearn.evaluate.probes.linear import topk_accuracy
from natlearn.evaluate.probes.protocols import Inputs, Probe
from natlearn.evaluate.probes.settings import ProbeResult
from natlearn.models.registry import arch_spec

if TYPE_CHECKING:
    from natlearn.evaluate.probes.settings import EvalSettings
    from natlearn.models import Network

__all__ = ["mlp_probe"]


def mlp_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    hidden: int = 4096,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 0.01,
    progress: bool = False,
    min_steps: int = 500,
    device: torch.device | None = None,
) -> ProbeResult:
    """The paper's transfer protocol on frozen conv features: fresh fc6-fc8
    (Linear-BN-ReLU-Dropout(0.5), Linear-BN-ReLU, Linear), SGD with momentum 0.9 and cosine decay.
    Trained on cached features of centre crops (the paper also used random crops; caching makes the
    protocol affordable on a CPU). ``device``: where it trains (None: the GPU when one is
    visible)."""
    device = device or resolve_device()
    standardise = standardiser(train_x)
    x, y = standardise(train_x).to(device), train_y.to(device)
    classes = int(train_y.max()) + 1
    torch.manual_seed(0)
    mlp = _fc6_to_fc8(x.shape[1], hidden, classes).to(device)
    optimizer = torch.optim.SGD(mlp.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    # Small training sets get smaller batches and more passes: at least min_steps steps whatever n
    # is (a batch larger than the set would otherwise train zero steps). Batches keep >= 2 rows for
    # BatchNorm.
    batch_size = max(2, min(batch_size, len(x) // 4))

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(mlp(x[batch.to(device)]), y[batch.to(device)])

    mlp.train()
    steps = fit_minibatches(
        optimizer,
        batch_loss,
        torch.arange(len(x)),
        batch_size,
        epochs,
        torch.Generator().manual_seed(0),
        batching="drop_last",  # BatchNorm cannot train on a 1-row batch
        min_steps=min_steps,
        label="mlp probe",
        progress=progress,
    )
    mlp.eval()
    with torch.no_grad():
        scores = torch.cat(
            [mlp(standardise(chunk).to(device)).cpu() for chunk in test_x.split(4096)]
        )
    top1, top5 = topk_accuracy(scores, test_y)
    return ProbeResult(top1, top5, steps=steps)


def _fc6_to_fc8(inputs: int, hidden: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, classes),
    )


# The protocol (natlearn.evaluate.probes.protocols): the MLP on the last conv layer of a network.


def layers(settings: EvalSettings, network: Network) -> list[str]:
    return [network.conv_names[-1]] if settings.mlp else []


def probes(inputs: Inputs) -> list[Probe]:
    settings, network = inputs.settings, inputs.network
    if not settings.mlp or network is None:
        return []
    layer = network.conv_names[-1]
    hidden = settings.mlp_hidden or arch_spec(network.arch).mlp_hidden
    x, x_test = inputs.train[layer], inputs.test[layer]
    run = functools.partial(
        _probe, x, inputs.train_y, x_test, inputs.test_y, hidden, settings, inputs.device
    )
    n, dims, classes = len(x), x.shape[1], inputs.classes()
    steps = max(500, 30 * n // 256)
    cost = 1e-10 * steps * 256 * (dims * hidden + hidden * hidden + hidden * classes)
    return [Probe("mlp", layer, dims, run, cost)]


def describe(settings: EvalSettings, network: Network | None) -> str | None:
    return f"MLP on {network.conv_names[-1]}" if settings.mlp and network is not None else None


def _probe(x, y, x_test, y_test, hidden, settings, device, threads) -> ProbeResult:
    epochs, progress = settings.probe_epochs, settings.progress
    return mlp_probe(x, y, x_test, y_test, hidden, epochs, progress=progress, device=device)
