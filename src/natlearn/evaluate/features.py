"""Frozen features: extracted once (eval mode, inference mode, centre crop), pooled to a fixed
budget, from images in memory or streamed from disk a batch at a time."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from natlearn.data import ImageData, ImageDataset, eval_view
from natlearn.models import Network
from natlearn.models.registry import arch_spec
from natlearn.progress import steps

__all__ = [
    "batch_features",
    "extract_features",
    "image_batches",
    "image_features",
    "network_features",
    "pool_conv_map",
    "FEATURE_BUDGET",
]

FEATURE_BUDGET = 9216


def pool_conv_map(
    feature_map: torch.Tensor, layer: str = "", arch: str = "small", max_dims: int = FEATURE_BUDGET
) -> torch.Tensor:
    """Average-pool a (b, C, H, W) conv map and flatten it to about ``max_dims`` features.

    AlexNet uses DeepCluster's table (conv1 -> 9600, conv2 -> 9216, conv3/4 -> 9600, conv5 -> 9216).
    Other networks get the same idea as a rule: the largest s x s grid with C * s * s <= max_dims,
    capped by the map's own size, so every layer is compared at a similar dimension.
    """
    pools = arch_spec(arch).pools
    if layer in pools:
        kernel, stride, padding = pools[layer]
        return F.avg_pool2d(feature_map, kernel, stride, padding).flatten(1)
    channels, height = feature_map.shape[1], feature_map.shape[2]
    side = max(1, min(height, math.isqrt(max(1, max_dims // channels))))
    return F.adaptive_avg_pool2d(feature_map, side).flatten(1)


def image_batches(
    data: torch.Tensor | ImageData, batch_size: int, device: torch.device, workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(ids, uint8 images on device)`` of every image of ``data`` in order, ``batch_size`` at a
    time: in-memory images (a uint8 (n, C, H, W) tensor or an :class:`ImageDataset`) moved a batch
    at a time, never all at once; a streamed folder read from disk by ``workers`` DataLoader
    processes, so it is never decoded whole. A stream with ``on_bad_image=skip`` leaves unreadable
    files out: their ids are missing."""
    images = data.images if isinstance(data, ImageDataset) else data
    if isinstance(images, torch.Tensor):
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            yield torch.arange(start, stop), images[start:stop].to(device)
        return
    yield from data.batches(torch.arange(len(data)).split(batch_size), device, workers)


@torch.inference_mode()
def image_features(
    data: torch.Tensor | ImageData,
    features: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    progress: bool = False,
    desc: str = "",
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``features`` (uint8 images on ``device`` -> name -> (b, f) on the CPU) of every image of
    ``data`` (see :func:`image_batches`), a batch at a time.

    Returns:
        (name -> (n, f) float32 on the CPU, the (n,) ids of the rows: all of ``data`` in order,
        but a stream's unreadable files with ``on_bad_image=skip``).
    """
    chunks: dict[str, list[torch.Tensor]] = {}
    ids = []
    what = f"features of {len(data):,} {desc} images".replace("  ", " ")
    batches = image_batches(data, batch_size, device, workers)
    total = math.ceil(len(data) / batch_size)
    for rows, images in steps(batches, what, total, progress, every=5.0, unit="batches"):
        ids.append(rows)
        for name, value in features(images).items():
            chunks.setdefault(name, []).append(value)
    return {name: torch.cat(parts) for name, parts in chunks.items()}, torch.cat(ids)


def network_features(
    model: Network,
    data: torch.Tensor | ImageData,
    layers: Sequence[str],
    crop_size: int,
    batch_size: int = 256,
    max_dims: int = FEATURE_BUDGET,
    progress: bool = False,
    crop: str = "pad",
    scale: float = 0.25,
    desc: str = "",
    workers: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`extract_features` of in-memory or streamed ``data``, with the ids of its rows (see
    :func:`image_features`)."""
    model.eval()
    device = next(model.parameters()).device
    return image_features(
        data,
        lambda images: batch_features(model, images, layers, crop_size, max_dims, crop, scale),
        device,
        batch_size,
        workers,
        progress,
        desc,
    )


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
    view = {"crop": crop, "scale": scale, "progress": progress, "desc": desc}
    return network_features(model, images, layers, crop_size, batch_size, max_dims, **view)[0]


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
