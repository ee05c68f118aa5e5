"""Pascal VOC 2007 multi-label classification transfer: does a network's representation tell
which of the 20 classes an image holds? (The paper's Table 3, classification column.)

Two protocols, both scored once on VOC07 ``test`` after every choice was made on ``val``:

- ``linear``: a per-class logistic regression (BCE) on a layer's frozen features (conv maps
  pooled as in :mod:`natlearn.evaluate.features`), its weight decay chosen by val mAP after
  fitting on ``train``, then refit on ``trainval`` (= train + val) with that decay;
- ``finetune``: every layer trained (BCE, random resized crops and flips, SGD); with several
  learning rates the one of best val mAP after training on ``train`` is retrained on
  ``trainval``.

Targets follow VOC2007: an image holding only ``difficult`` objects of a class is neither positive
nor negative for it (ignored in the loss and in AP). AP is reported two ways (devkit formulas in
:mod:`natlearn.evaluate.voc.average_precision`): ``ap11``, VOC2007's 11-point interpolated AP, the
paper's metric and what choices are made by; and ``ap_all``, VOC2010+'s all-point AP.

Images are resized whole (aspect not kept, so no object is cropped away) to ``image_size`` and seen
through the network's own input layer (rgb, gray or sobel).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from natlearn.data import Augmentation, center_crop
from natlearn.data.voc import VOC07, decode_images
from natlearn.evaluate.features import extract_features
from natlearn.evaluate.fit import (
    WEIGHT_DECAYS,
    best_index,
    choose_on_val,
    cpu_threads,
    decay_walk,
    fit_lbfgs,
    standardiser,
    tuned_copy,
)
from natlearn.evaluate.voc.average_precision import average_precision, precision_recall
from natlearn.models import Network
from natlearn.progress import say

__all__ = [
    "ClassifySettings",
    "class_average_precisions",
    "classification_transfer",
]


@dataclass
class ClassifySettings:
    """What the classification transfer runs.

    Attributes:
        layers: layers the linear probe runs on (``neck``: the penultimate features).
        linear: run the linear probe.
        weight_decays: the linear probe's decays, one chosen on val.
        finetune_epochs: epochs of full fine-tuning (0: none).
        finetune_lrs: its learning rates; with several, one is chosen on val.
        batch_size: fine-tuning batch.
        crop_scale: smallest area fraction of a fine-tuning crop (aspect 3/4..4/3, resized back to
            the image size).
    """

    layers: tuple[str, ...] = ("neck",)
    linear: bool = True
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS
    finetune_epochs: int = 20
    finetune_lrs: tuple[float, ...] = (0.01,)
    batch_size: int = 64
    crop_scale: float = 0.25
    progress: bool = True


def class_average_precisions(
    scores: torch.Tensor, targets: torch.Tensor, eleven_point: bool = True
) -> torch.Tensor:
    """Per-class AP of (n, C) ``scores`` against (n, C) ``targets`` (1 positive, -1 negative, 0
    ignored): VOC2007's 11-point interpolated AP (``eleven_point``) or VOC2010+'s all-point AP.
    Images are ranked by score, ties in image order (the devkit's stable sort).

    Returns:
        (C,) float64; NaN for a class without a positive image (AP undefined).
    """
    out = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        truth = targets[:, c]
        positives = int((truth > 0).sum())
        if positives == 0:
            continue
        order = torch.sort(scores[:, c], descending=True, stable=True).indices
        ranked = truth[order]
        precision, recall = precision_recall(ranked > 0, ranked < 0, positives)
        out[c] = average_precision(precision, recall, eleven_point)
    return out


def _ap_report(scores: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> dict:
    """Per-class AP both ways and their means over the classes with a positive image."""
    report: dict = {}
    for name, eleven in (("11", True), ("_all", False)):
        aps = class_average_precisions(scores, targets, eleven)
        report[f"map{name}"] = _mean(aps)
        report[f"ap{name}"] = {c: _number(ap) for c, ap in zip(classes, aps.tolist(), strict=True)}
    report["classes_scored"] = int((targets > 0).any(dim=0).sum())
    return report


def _mean(aps: torch.Tensor) -> float:
    return float(aps.nanmean())


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class logistic loss of (b, C) logits against (b, C) int8 targets, summed over classes
    and averaged over images; difficult-only entries (0) add nothing (the VOC2007 rule)."""
    labels = (targets > 0).to(logits.dtype)
    weight = (targets != 0).to(logits.dtype)
    summed = F.binary_cross_entropy_with_logits(logits, labels, weight=weight, reduction="sum")
    return summed / len(logits)


def _fit_linear(x: torch.Tensor, targets: torch.Tensor, decay: float) -> Callable:
    """The BCE probe of one decay on (n, f) features: standardised by these features, fit by
    L-BFGS from zero (:func:`natlearn.evaluate.fit.fit_lbfgs`); returns features -> logits."""
    standardise = standardiser(x)
    # One thread, as linear_probe fits features of up to 5e7 numbers: OpenMP threads waiting for
    # each other at every small op are several times slower on shared cores.
    with cpu_threads(1 if x.numel() <= 5e7 and x.device.type == "cpu" else None):
        weight, bias = fit_lbfgs(standardise(x), targets, targets.shape[1], decay, loss=_bce)
    return lambda features: standardise(features) @ weight.T + bias


def _linear_probe(
    features: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    settings: ClassifySettings,
    classes: Sequence[str],
) -> dict:
    """The linear protocol on one layer's features (split -> (n, f)): decay by val mAP (11-point)
    after fitting on train, refit on trainval, test scored once."""
    started = time.perf_counter()
    decays = settings.weight_decays
    by_decay: list[float | None] = [None] * len(decays)
    for i in decay_walk(decays, by_decay):
        probe = _fit_linear(features["train"], targets["train"], decays[i])
        with torch.no_grad():
            by_decay[i] = _mean(class_average_precisions(probe(features["val"]), targets["val"]))
    best = best_index(by_decay)
    trainval = torch.cat([features["train"], features["val"]])
    probe = _fit_linear(trainval, torch.cat([targets["train"], targets["val"]]), decays[best])
    with torch.no_grad():
        test = _ap_report(probe(features["test"]), targets["test"], classes)
    return {
        "test": test,
        "weight_decay": decays[best],
        "chosen_on": "val",
        "fit_on": "trainval",
        "val_map11": by_decay[best],
        "val_map11_by_decay": {
            f"{d:g}": s for d, s in zip(decays, by_decay, strict=True) if s is not None
        },
        "seconds": time.perf_counter() - started,
    }


@torch.inference_mode()
def _network_scores(model: Network, images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C) logits of a fine-tuned network on uint8 (n, c, size, size) images, whole."""
    device = next(model.parameters()).device
    return torch.cat(
        [model(center_crop(chunk.to(device), size)).float().cpu() for chunk in images.split(256)]
    )


def _finetune(
    model: Network,
    images: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size: int,
    settings: ClassifySettings,
    classes: Sequence[str],
) -> dict:
    """The fine-tuning protocol: with several learning rates, each trained on train and scored on
    val, the best (11-point val mAP) retrained on trainval; test scored once."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    augmentation = Augmentation(size, "resized", scale=settings.crop_scale, flip=True)

    def train_on(split_images: torch.Tensor, split_targets: torch.Tensor, lr: float) -> Network:
        def loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return _bce(logits.float(), split_targets[ids].to(device))

        return tuned_copy(
            model,
            len(classes),
            split_images,
            loss,
            augmentation,
            settings.finetune_epochs,
            lr,
            settings.progress,
            settings.batch_size,
        )

    def val_map(lr: float) -> float:
        tuned = train_on(images["train"], targets["train"], lr)
        val_scores = _network_scores(tuned, images["val"], size)
        found = _mean(class_average_precisions(val_scores, targets["val"]))
        say(f"finetune lr {lr:g}: val mAP {found:.4f}", settings.progress)
        return found

    lrs = settings.finetune_lrs
    lr, by_lr = choose_on_val(lrs, val_map)
    trainval_images = torch.cat([images["train"], images["val"]])
    tuned = train_on(trainval_images, torch.cat([targets["train"], targets["val"]]), lr)
    test = _ap_report(_network_scores(tuned, images["test"], size), targets["test"], classes)
    result = {
        "test": test,
        "lr": lr,
        "epochs": settings.finetune_epochs,
        "chosen_on": "val" if len(lrs) > 1 else "given",  # given: one lr, nothing to choose
        "fit_on": "trainval",
    }
    if by_lr:
        result["val_map11_by_lr"] = by_lr
    return {**result, "seconds": time.perf_counter() - started}


def classification_transfer(
    model: Network,
    data: VOC07,
    image_size: int,
    settings: ClassifySettings,
    images: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Both protocols of ``settings`` on ``model`` (moved to its device beforehand).

    Args:
        images: split -> decoded (n, c, image_size, image_size) uint8 images (see
            :func:`~natlearn.data.voc.decode_images`), a cache shared by networks of the same
            input: splits missing from it are decoded and added.
    Returns:
        ``{"protocols": {"linear": {layer: ...}, "finetune": {"all": ...}}, "seconds": {...}}``;
        each protocol holds ``test`` (``ap11``/``ap_all`` per class, ``map11``, ``map_all``),
        what it chose, on which split, and its time.
    """
    started = time.perf_counter()
    channels = model.input.in_channels
    images = {} if images is None else images
    for name in ("train", "val", "test"):
        if name not in images:
            split = getattr(data, name)
            images[name] = decode_images(split, image_size, channels, settings.progress, name)
    decoded = time.perf_counter()
    targets = {name: getattr(data, name).class_targets() for name in ("train", "val", "test")}
    protocols: dict[str, dict] = {}
    if settings.linear and settings.layers:
        protocols["linear"] = _linear_probes(model, images, targets, image_size, settings, data)
    if settings.finetune_epochs:
        result = _finetune(model, images, targets, image_size, settings, data.classes)
        protocols["finetune"] = {"all": result}
        say(
            f"finetune: test mAP {result['test']['map11']:.4f} (11-point), "
            f"{result['test']['map_all']:.4f} (all-point), {result['seconds']:.1f} s",
            settings.progress,
        )
    return {
        "protocols": protocols,
        "seconds": {
            "decode": decoded - started,
            "total": time.perf_counter() - started,
        },
    }


def _linear_probes(
    model: Network,
    images: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    image_size: int,
    settings: ClassifySettings,
    data: VOC07,
) -> dict[str, dict]:
    """layer -> the linear protocol's result on the frozen features of ``settings.layers``."""
    features = {
        name: extract_features(
            model,
            images[name],
            list(settings.layers),
            image_size,
            crop="none",  # the whole resized image
            progress=settings.progress,
            desc=name,
        )
        for name in ("train", "val", "test")
    }
    results = {}
    for layer in settings.layers:
        split_features = {name: found[layer] for name, found in features.items()}
        dims = split_features["train"].shape[1]
        result = _linear_probe(split_features, targets, settings, data.classes)
        results[layer] = {"features": dims, **result}
        say(
            f"linear {layer} ({dims:,} features): test mAP {result['test']['map11']:.4f} "
            f"(11-point), {result['test']['map_all']:.4f} (all-point); weight decay "
            f"{result['weight_decay']:g} chosen on val, {result['seconds']:.1f} s",
            settings.progress,
        )
    return results
