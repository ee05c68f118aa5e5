"""Frozen features: extracted once (eval mode, inference mode, centre crop), pooled to a fixed
budget."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from natlearn.data import eval_view
from natlearn.models import Network
from natlearn.progress import steps

__all__ = [
    "batch_features",
    "extract_features",
    "pool_conv_map",
    "DEEPCLUSTER_POOLS",
    "FEATURE_BUDGET",
]

FEATURE_BUDGET = 9216
# DeepCluster's average pooling (kernel, stride, padding) of AlexNet's conv maps to ~9k dims.
DEEPCLUSTER_POOLS = {
    "conv1": (6, 6, 3),
    "conv2": (4, 4, 0),
    "conv3": (3, 3, 1),
    "conv4": (3, 3, 1),
    "conv5": (2, 2, 0),
}


def pool_conv_map(
    feature_map: torch.Tensor, layer: str = "", arch: str = "small", max_dims: int = FEATURE_BUDGET
) -> torch.Tensor:
    """Average-pool a (b, C, H, W) conv map and flatten it to about ``max_dims`` features.

    AlexNet uses DeepCluster's table (conv1 -> 9600, conv2 -> 9216, conv3/4 -> 9600, conv5 -> 9216).
    Other networks get the same idea as a rule: the largest s x s grid with C * s * s <= max_dims,
    capped by the map's own size, so every layer is compared at a similar dimension.
    """
    if arch == "alexnet" and layer in DEEPCLUSTER_POOLS:
        kernel, stride, padding = DEEPCLUSTER_POOLS[layer]
        return F.avg_pool2d(feature_map, kernel, stride, padding).flatten(1)
    channels, height = feature_map.shape[1], feature_map.shape[2]
    side = max(1, min(height, math.isqrt(max(1, max_dims // channels))))
    return F.adaptive_avg_pool2d(feature_map, side).flatten(1)


@torch.inference_mode()
def extract_features(
    model: Network,
    images: torch.Tensor,
    layers: Sequence[str],
    crop_size: int,
    batch_size: int = 256,
    max_dims: int = FEATURE_BUDGET,
    progress: bool = False,
    crop: str = "pad",
    scale: float = 0.25,
    desc: str = "",
) -> dict[str, torch.Tensor]:
    """Features of ``layers`` for uint8 ``images`` (n, C, H, W): the deterministic view matching the
    training crops ``crop``/``scale`` (:func:`natlearn.data.eval_view`: the centre crop for pad
    crops), eval mode, conv maps pooled by :func:`pool_conv_map`.

    Returns:
        layer name -> (n, features) float32 on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    starts = range(0, len(images), batch_size)
    what = f"features of {len(images):,} {desc} images".replace("  ", " ")
    for start in steps(starts, what, enabled=progress, every=5.0, unit="batches"):
        batch = images[start : start + batch_size].to(device)
        features = batch_features(model, batch, layers, crop_size, max_dims, crop, scale)
        for name, value in features.items():
            chunks[name].append(value)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@torch.inference_mode()
def batch_features(
    model: Network,
    images: torch.Tensor,
    layers: Sequence[str],
    crop_size: int,
    max_dims: int = FEATURE_BUDGET,
    crop: str = "pad",
    scale: float = 0.25,
) -> dict[str, torch.Tensor]:
    """The features :func:`extract_features` gives, of one batch of uint8 ``images`` (b, C, H, W)
    on the model's device (the model in eval mode): layer name -> (b, features) float32 on the
    CPU."""
    out = {}
    for name, value in model.features(eval_view(images, crop_size, crop, scale), layers).items():
        pooled = pool_conv_map(value, name, model.arch, max_dims) if value.dim() == 4 else value
        out[name] = pooled.float().cpu()
    return out
