"""Frozen-feature extraction and the linear probe used to score representations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from natlearn.data import center_crop
from natlearn.models import Network

__all__ = ["ProbeResult", "extract_features", "knn_accuracy", "linear_probe", "pool_to_budget"]


def pool_to_budget(feature_map: torch.Tensor, max_dims: int = 9216) -> torch.Tensor:
    """Average-pool a (b, C, H, W) map to the largest s x s grid with C * s * s <= max_dims, flattened.

    The small-network version of the DeepCluster rule (AlexNet conv maps pooled to ~9k dims):
    every layer is compared at a similar dimension, capped by its own resolution.
    """
    channels, height = feature_map.shape[1], feature_map.shape[2]
    side = max(1, min(height, math.isqrt(max(1, max_dims // channels))))
    return F.adaptive_avg_pool2d(feature_map, side).flatten(1)


@torch.inference_mode()
def extract_features(
    model: Network, images: torch.Tensor, layers: Sequence[str], image_size: int, batch_size: int = 512, max_dims: int = 9216
) -> dict[str, torch.Tensor]:
    """Features of ``layers`` for uint8 ``images`` (n, C, H, W): centre crop, eval mode, conv maps pooled.

    Returns:
        layer name -> (n, features) float32 on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(images), batch_size):
        batch = center_crop(images[start : start + batch_size].to(device), image_size)
        for name, value in model.features(batch, layers).items():
            chunks[name].append((pool_to_budget(value, max_dims) if value.dim() == 4 else value).float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@dataclass(frozen=True)
class ProbeResult:
    """Test top-1 of a linear classifier, and the weight decay chosen on a held-out part of train."""

    top1: float
    weight_decay: float


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    classifier = torch.nn.Linear(x.shape[1], num_classes, dtype=x.dtype)
    torch.nn.init.zeros_(classifier.weight)
    torch.nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(x), y) + 0.5 * weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return classifier


def _accuracy(classifier: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((classifier(x).argmax(dim=1) == y).double().mean())


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    weight_decays: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    max_iter: int = 300,
) -> ProbeResult:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS).

    The weight decay is chosen on a fixed 20% of the training set; the classifier is then refit on all
    of it and scored once on the test set, which is never used for any choice.

    Args:
        train_x: (n_train, f) features; train_y: (n_train,) labels.
        test_x: (n_test, f) features; test_y: (n_test,) labels.
    """
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(train_y.max()) + 1
    held_out = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    cut = len(train_x) // 5
    val_idx, fit_idx = held_out[:cut], held_out[cut:]
    scores = {
        wd: _accuracy(_fit_logistic(train_x[fit_idx], train_y[fit_idx], num_classes, wd, max_iter), train_x[val_idx], train_y[val_idx])
        for wd in weight_decays
    }
    best = max(weight_decays, key=lambda wd: (scores[wd], wd))
    classifier = _fit_logistic(train_x, train_y, num_classes, best, max_iter)
    return ProbeResult(top1=_accuracy(classifier, test_x, test_y), weight_decay=best)


def knn_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, k: int = 20, temperature: float = 0.07
) -> float:
    """Weighted k-NN (InstDisc/DINO): cosine neighbours vote with weight exp(similarity / temperature)."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    num_classes = int(train_y.max()) + 1
    similarity, neighbours = (test_x @ train_x.T).topk(min(k, len(train_x)), dim=1)
    votes = torch.zeros(len(test_x), num_classes).scatter_add_(1, train_y[neighbours], (similarity / temperature).exp())
    return float((votes.argmax(dim=1) == test_y).double().mean())
