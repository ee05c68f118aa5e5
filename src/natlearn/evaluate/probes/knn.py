"""Weighted k-nearest-neighbour classification of frozen features (InstDisc/DINO's protocol)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from natlearn.config import resolve_device
from natlearn.evaluate.probes.linear import topk_accuracy
from natlearn.evaluate.probes.protocols import Inputs, Probe
from natlearn.evaluate.probes.settings import ProbeResult

if TYPE_CHECKING:
    from natlearn.evaluate.probes.settings import EvalSettings
    from natlearn.models import Network

__all__ = ["knn_classify"]


def knn_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    device: torch.device | None = None,
) -> ProbeResult:
    """Weighted k-NN (InstDisc/DINO): the k most cosine-similar training features vote with weight
    exp(similarity / temperature). Test rows are processed in chunks to bound memory. With fewer
    than k training images every one votes; the result's ``k`` says how many did. ``device``: where
    the similarities are computed (None: the GPU when one is visible)."""
    device = device or resolve_device()
    bank = F.normalize(train_x.float(), dim=1).to(device)
    k = min(k, len(bank))
    labels = train_y.to(device)
    classes = int(train_y.max()) + 1
    scores = []
    for chunk in test_x.split(1024):
        similarity, neighbours = (F.normalize(chunk.float(), dim=1).to(device) @ bank.T).topk(
            k, dim=1
        )
        votes = torch.zeros(len(chunk), classes, device=device).scatter_add_(
            1, labels[neighbours], (similarity / temperature).exp()
        )
        scores.append(votes.cpu())
    top1, top5 = topk_accuracy(torch.cat(scores), test_y)
    return ProbeResult(top1, top5, k=k)


# The protocol (natlearn.evaluate.probes.protocols): weighted k-NN for each k of ``settings.knn``.


def layers(settings: EvalSettings, network: Network) -> list[str]:
    return list(settings.knn_layers)


def probes(inputs: Inputs) -> list[Probe]:
    on = inputs.train if inputs.network is None else inputs.settings.knn_layers
    listed = []
    for layer in on:
        x, x_test = inputs.train[layer], inputs.test[layer]
        cost = 1e-9 * len(x) * len(x_test) * x.shape[1]
        for k in inputs.settings.knn:
            run = functools.partial(
                _probe, x, inputs.train_y, x_test, inputs.test_y, k, inputs.device
            )
            listed.append(Probe(f"knn{k}", layer, x.shape[1], run, cost))
    return listed


def describe(settings: EvalSettings, network: Network | None) -> str | None:
    if not settings.knn:
        return None
    on = ", ".join(settings.knn_layers) if network is not None else "features"
    return f"{'/'.join(map(str, settings.knn))}-NN on {on}"


def _probe(x, y, x_test, y_test, k, device, threads) -> ProbeResult:
    return knn_classify(x, y, x_test, y_test, k=k, device=device)
