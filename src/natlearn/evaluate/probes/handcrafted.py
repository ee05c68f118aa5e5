"""The hand-crafted baseline: Coates & Ng's single-layer k-means features (Coates, Lee & Ng, "An
Analysis of Single-Layer Networks in Unsupervised Feature Learning", AISTATS 2011), the published
shallow anchor on CIFAR-10 (77.9% with 1,600 centroids, 79.6% with 4,000).

The paper sets NAT against dense SIFT + Fisher vectors (:mod:`natlearn.evaluate.probes.fisher`);
on CIFAR-10's 32x32 images these features are that comparison's strong form. As the paper, on the
evaluation view (:func:`natlearn.data.eval_view`, pixels in [0, 1]):

- Patches: every ``patch`` x ``patch`` window (6x6, all channels) at stride 1: 27x27 of them on a
  32x32 view (views smaller than ``patch + 1`` pixels are refused).
- Per-patch normalisation: minus the patch's mean, over sqrt(its variance + 10 / 255^2) (the
  paper's +10 on 0-255 pixels).
- ZCA whitening: W = V diag(1 / sqrt(d + 0.1)) V^T of the normalised patches' covariance V diag(d)
  V^T, applied after subtracting their mean.
- k-means (plain Lloyd, as the paper) with ``centroids`` centres on the whitened patches, started
  from distinct random patches; a centre that loses every patch keeps its place.
- Triangle encoding: f_k = max(0, mean_j z_j - z_k) for the distances z_k to the centres, summed
  over the four quadrants of the window grid (the first half of an odd side holds its middle row
  or column, as the paper's round(27 / 2) = 14): 4 x ``centroids`` features.

Normalisation, whitening and centres are fit on ``patches`` windows drawn with a seeded generator
from **training** images only (the paper: 400,000); test images are encoded afterwards. The
encoding is a convolution: one ``patch`` x ``patch`` conv with the whitening folded into its
filters gives each window's whitened vector w, and its distances to the centres come from
|w|^2 + |c|^2 - 2 w.c (a 1x1 convolution with the centres); a batch of images at a time on
``device``, never every patch at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from natlearn.data import ImageData, eval_view
from natlearn.errors import NatlearnError
from natlearn.evaluate.features import image_features
from natlearn.evaluate.fit import cpu_threads

__all__ = [
    "SETTINGS",
    "Encoder",
    "PatchEncoder",
    "Whitening",
    "coates_ng",
    "encode",
    "fit_encoder",
    "fit_whitening",
    "fit_whitening_on",
    "kmeans",
    "normalise",
]

# natlearn's ``hand-crafted`` source; every value is part of its evaluations' reuse key, so a
# stored evaluation made with other values is never taken for this one. 1,600 centroids, the
# anchor's 77.9% setting: fit and encoded in 11 min on CIFAR-10 on 2 shared CPU cores (measured;
# 4,000 costs ~2.5x that, docs/results.md).
SETTINGS = {
    "centroids": 1600,
    "patch": 6,
    "patches": 400_000,
    "iterations": 50,
    "normalise_eps": 10 / 255**2,
    "zca_eps": 0.1,
    "seed": 0,
}

_BATCH = 256  # images per batch read and convolved
_CELLS = 3_000_000  # (window, centre) distances per work item: ~12 MB, a few images at K = 1,600


class PatchEncoder(Protocol):
    """What :func:`encode` takes: features of a batch of views from their ``patch`` x ``patch``
    windows (an :class:`Encoder`, or :class:`~natlearn.evaluate.probes.fisher.FisherEncoder`)."""

    @property
    def patch(self) -> int: ...

    def to(self, device: torch.device) -> PatchEncoder: ...

    def __call__(self, views: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Whitening:
    """Patch normalisation and ZCA whitening, fit on training patches: the normalised patches' mean
    and ZCA matrix, and the constants of the normalisation."""

    mean: torch.Tensor  # (D,) of the normalised patches, D = channels * patch^2
    whiten: torch.Tensor  # (D, D) symmetric
    patch: int
    normalise_eps: float

    def whitened(self, views: torch.Tensor) -> torch.Tensor:
        """(b, D, rows, cols): every window's normalised, whitened vector W (x~ - m), with
        x~ = (x - mean(x)) / sqrt(var(x) + eps) folded into one convolution: W x~ is
        (W x - mean(x) W 1) / s(x)."""
        dims, p = len(self.mean), self.patch
        filters = self.whiten.reshape(dims, views.shape[1], p, p)
        total = F.avg_pool2d(views.sum(1, keepdim=True), p, stride=1) * (p * p)
        squares = F.avg_pool2d(views.square().sum(1, keepdim=True), p, stride=1) * (p * p)
        mean = total / dims
        variance = (squares - total * mean).clamp_min(0) / (dims - 1)  # unbiased, as the paper's
        projected = F.conv2d(views, filters) - mean * self.whiten.sum(1)[:, None, None]
        return (
            projected / (variance + self.normalise_eps).sqrt()
            - (self.whiten @ self.mean)[:, None, None]
        )


@dataclass(frozen=True)
class Encoder(Whitening):
    """A fitted Coates & Ng encoder: the whitening and the centres in the whitened space."""

    centres: torch.Tensor  # (K, D)

    def to(self, device: torch.device) -> Encoder:
        return Encoder(
            self.mean.to(device),
            self.whiten.to(device),
            self.patch,
            self.normalise_eps,
            self.centres.to(device),
        )

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        """(b, 4 K) quadrant sums of the triangle activations of (b, C, H, W) float views."""
        whitened = self.whitened(views)
        rows, cols = whitened.shape[2:]
        per_item = max(1, _CELLS // (rows * cols * len(self.centres)))
        parts = whitened.split(per_item)
        return torch.cat(list(_map(self._pooled, parts, views.device)))

    def _pooled(self, whitened: torch.Tensor) -> torch.Tensor:
        n, dims, rows, cols = whitened.shape
        w = whitened.permute(0, 2, 3, 1).reshape(-1, dims)
        # |w - c|^2 = |w|^2 + |c|^2 - 2 w.c, in place: the (windows, K) block is the big one.
        distance = torch.addmm(self.centres.square().sum(1), w, self.centres.T, alpha=-2)
        distance.add_(w.square().sum(1, keepdim=True)).clamp_(min=0).sqrt_()
        active = distance.sub_(distance.mean(1, keepdim=True)).neg_().clamp_(min=0)
        grid = active.view(n, rows, cols, -1)
        top, left = math.ceil(rows / 2), math.ceil(cols / 2)
        quadrants = (
            grid[:, :top, :left],
            grid[:, :top, left:],
            grid[:, top:, :left],
            grid[:, top:, left:],
        )
        return torch.cat([quadrant.sum((1, 2)) for quadrant in quadrants], dim=1)


def _map(function: Callable, items, device: torch.device) -> Iterator:
    """``function`` of each item in order: on a CPU on all of torch's threads at once, one OpenMP
    thread each (their per-op barriers made the encoding 1.5x slower on 2 shared cores; see
    :func:`~natlearn.evaluate.fit.cpu_threads`); elsewhere one after another."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        return map(function, items)

    def single(item):
        with cpu_threads(1):
            return function(item)

    with ThreadPoolExecutor(threads) as pool:
        return iter(list(pool.map(single, items)))


def normalise(patches: torch.Tensor, eps: float) -> torch.Tensor:
    """(m, D) patches minus their own mean, over sqrt(their unbiased variance + ``eps``)."""
    mean = patches.mean(1, keepdim=True)
    return (patches - mean) / (patches.var(1, keepdim=True) + eps).sqrt()


def fit_whitening(patches: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, ZCA matrix V diag(1 / sqrt(d + ``eps``)) V^T) of (m, D) normalised patches, in
    float64 then float32."""
    x = patches.double()
    mean = x.mean(0)
    covariance = torch.cov((x - mean).T)
    values, vectors = torch.linalg.eigh(covariance)
    whiten = vectors @ torch.diag((values.clamp_min(0) + eps).rsqrt()) @ vectors.T
    return mean.float(), whiten.float()


def kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """(k, D) centres of (m, D) points (k at most m) by ``iterations`` Lloyd steps from k distinct
    points drawn with ``seed``; points are assigned a block at a time, on ``x``'s device."""
    generator = torch.Generator().manual_seed(seed)
    k = min(k, len(x))
    centres = x[torch.randperm(len(x), generator=generator)[:k].to(x.device)].clone()
    block = max(1, _CELLS // k)
    for _ in range(iterations):
        half_norms = centres.square().sum(1) / 2

        def assign(points: torch.Tensor, centres=centres, half_norms=half_norms) -> torch.Tensor:
            # argmin |x - c|^2 = argmax x.c - |c|^2 / 2
            return torch.addmm(-half_norms, points, centres.T).argmax(1)

        labels = torch.cat(list(_map(assign, x.split(block), x.device)))
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        kept = counts > 0
        centres[kept] = sums[kept] / counts[kept, None]
    return centres


def _views(images: torch.Tensor, crop_size: int, crop: str, scale: float, patch: int):
    if crop_size <= patch:
        raise NatlearnError(
            f"hand-crafted features need views larger than their {patch}x{patch} patches; got "
            f"{crop_size}x{crop_size} (set image_size/crop_size to at least {patch + 1})"
        )
    return eval_view(images, crop_size, crop, scale)


def fit_encoder(
    train: torch.Tensor | ImageData,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    device: torch.device | None = None,
    workers: int = 0,
    centroids: int = SETTINGS["centroids"],
    patch: int = SETTINGS["patch"],
    patches: int = SETTINGS["patches"],
    iterations: int = SETTINGS["iterations"],
    normalise_eps: float = SETTINGS["normalise_eps"],
    zca_eps: float = SETTINGS["zca_eps"],
    seed: int = SETTINGS["seed"],
) -> Encoder:
    """The :class:`Encoder` of ``train`` images (uint8 in memory, or a streamed folder): its
    whitening and its k-means centres fit on the same whitened training patches
    (:func:`fit_whitening_on`)."""
    device = device or torch.device("cpu")
    view = (crop_size, crop, scale, device, workers)
    whitening, x = fit_whitening_on(train, *view, patch, patches, normalise_eps, zca_eps, seed)
    centres = kmeans(x.to(device), centroids, iterations, seed)
    return Encoder(whitening.mean, whitening.whiten, patch, normalise_eps, centres.cpu()).to(device)


def fit_whitening_on(
    train: torch.Tensor | ImageData,
    crop_size: int,
    crop: str,
    scale: float,
    device: torch.device,
    workers: int,
    patch: int,
    patches: int,
    normalise_eps: float,
    zca_eps: float,
    seed: int,
) -> tuple[Whitening, torch.Tensor]:
    """The :class:`Whitening` of ``train`` images and the (m, D) whitened patches it was fit on:
    ``patches`` windows (fewer if the images have fewer), the same number from each of the training
    images drawn with ``seed`` (every image when there are fewer than ``patches``), at positions
    drawn with it (at most as many per image as it has windows)."""
    generator = torch.Generator().manual_seed(seed)
    per_image = min(math.ceil(patches / len(train)), (crop_size - patch + 1) ** 2)
    chosen = torch.randperm(len(train), generator=generator)[: math.ceil(patches / per_image)]
    chosen = chosen.sort().values
    sampled = train[chosen] if isinstance(train, torch.Tensor) else train.subset(chosen)

    def windows(images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = _views(images, crop_size, crop, scale, patch)
        unfolded = F.unfold(views, patch)  # (b, D, windows)
        # Positions from the one generator, batch after batch in order: deterministic.
        picks = torch.randint(unfolded.shape[2], (len(views), per_image), generator=generator)
        dims = unfolded.shape[1]
        picked = unfolded.gather(2, picks.to(views.device)[:, None].expand(-1, dims, -1))
        return {"patches": picked.transpose(1, 2).reshape(-1, dims).cpu()}

    found, _ = image_features(sampled, windows, device, _BATCH, workers)
    x = normalise(found["patches"][:patches], normalise_eps)
    mean, whiten = fit_whitening(x, zca_eps)
    return Whitening(mean, whiten, patch, normalise_eps), (x - mean) @ whiten


def encode(
    data: torch.Tensor | ImageData,
    encoder: PatchEncoder,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    device: torch.device | None = None,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, features) float32 features on the CPU of ``data``'s evaluation views (4 K for an
    :class:`Encoder`), computed on ``device`` (default the CPU) a batch at a time, and the ids of
    their rows (see :func:`~natlearn.evaluate.features.image_features`)."""
    device = device or torch.device("cpu")
    encoder = encoder.to(device)

    def features(images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = _views(images, crop_size, crop, scale, encoder.patch)
        return {"features": encoder(views).cpu()}

    found, rows = image_features(data, features, device, _BATCH, workers)
    return found["features"], rows


def coates_ng(
    train: torch.Tensor | ImageData,
    test: torch.Tensor | ImageData,
    crop_size: int,
    crop: str = "pad",
    scale: float = 0.25,
    device: torch.device | None = None,
    workers: int = 0,
    **settings,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(features, the ids of their rows) of ``train`` and of ``test`` (:func:`encode`), with the
    encoder fit on training images only (:func:`fit_encoder`; ``settings``: its keyword
    arguments, default :data:`SETTINGS`)."""
    encoder = fit_encoder(train, crop_size, crop, scale, device, workers, **settings)
    return tuple(
        encode(data, encoder, crop_size, crop, scale, device, workers) for data in (train, test)
    )
