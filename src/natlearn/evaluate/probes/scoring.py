"""Every protocol of the suite on one source's frozen features: a network's layers, raw pixels, or
Coates & Ng's hand-crafted features. Features are extracted once and shared by every probe;
baselines (random init, supervised, raw pixels) go through the same code."""

from __future__ import annotations

import time

import torch

from natlearn.config import resolve_device
from natlearn.data import ImageData, eval_view
from natlearn.evaluate.features import image_features, network_features
from natlearn.evaluate.probes.protocols import PROTOCOLS, Inputs
from natlearn.evaluate.probes.settings import EvalSettings
from natlearn.evaluate.probes.suite import probe_all
from natlearn.models import Network
from natlearn.progress import say

__all__ = ["evaluate_handcrafted", "evaluate_network", "evaluate_pixels"]


def evaluate_network(
    model: Network,
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
) -> dict:
    """Every protocol of ``settings`` on ``model``'s frozen features (train split fits, test split
    scores), on the model's device. A streamed folder is read a batch at a time, never whole."""
    for protocol in PROTOCOLS:
        protocol.check(settings, train_set, test_set)
    started = time.perf_counter()
    device = next(model.parameters()).device
    # Every layer a protocol reads, extracted once and shared by every probe.
    wanted = list(dict.fromkeys(layer for p in PROTOCOLS for layer in p.layers(settings, model)))
    view = {"crop": settings.crop, "scale": settings.crop_scale, "progress": settings.progress}
    extracting = time.perf_counter()
    # The labels follow the rows: a stream with on_bad_image=skip leaves unreadable files out.
    (train, train_rows), (test, test_rows) = (
        network_features(
            model, data, wanted, crop_size, **view, desc=split, workers=settings.workers
        )
        for data, split in ((train_set, "train"), (test_set, "test"))
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    say(
        f"features of {len(train_y):,} train + {len(test_y):,} test images, "
        f"{len(wanted)} layer{'s' * (len(wanted) != 1)}: {time.perf_counter() - extracting:.1f} s",
        settings.progress,
    )
    inputs = Inputs(
        {k: train[k] for k in wanted},
        {k: test[k] for k in wanted},
        train_y,
        test_y,
        settings,
        device,
        model,
        train_set,
        test_set,
        crop_size,
    )
    results = probe_all(inputs)
    return {"protocols": results, "seconds": time.perf_counter() - started}


def evaluate_pixels(
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
    device: torch.device | None = None,
) -> dict:
    """Raw pixels of the centre crop as features: the floor any representation should clear.
    ``device``: where the views are cut and the probes run (None: the GPU when one is visible)."""
    started = time.perf_counter()
    device = device or resolve_device()

    def pixels(images: torch.Tensor) -> dict[str, torch.Tensor]:
        view = eval_view(images, crop_size, settings.crop, settings.crop_scale)
        return {"pixels": view.flatten(1).cpu()}

    (train_x, train_rows), (test_x, test_rows) = (
        image_features(data, pixels, device, workers=settings.workers)
        for data in (train_set, test_set)
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    return _evaluate_fixed(
        "pixels", train_x["pixels"], test_x["pixels"], train_y, test_y, settings, device, started
    )


def evaluate_handcrafted(
    train_set: ImageData,
    test_set: ImageData,
    crop_size: int,
    settings: EvalSettings,
    device: torch.device | None = None,
) -> dict:
    """The paper's hand-crafted comparison in its strong, published form: Coates & Ng's k-means
    features (:mod:`natlearn.evaluate.probes.handcrafted`, with its ``SETTINGS``), normalisation,
    whitening and centres fit on training images only. ``device``: where the features are
    computed and the probes run (None: the GPU when one is visible)."""
    from natlearn.evaluate.probes import handcrafted

    started = time.perf_counter()
    device = device or resolve_device()
    options = handcrafted.SETTINGS
    (train_x, train_rows), (test_x, test_rows) = handcrafted.coates_ng(
        train_set,
        test_set,
        crop_size,
        settings.crop,
        settings.crop_scale,
        device,
        settings.workers,
        **options,
    )
    train_y, test_y = train_set.labels[train_rows], test_set.labels[test_rows]
    say(
        f"hand-crafted: {len(train_x) + len(test_x):,} images -> {train_x.shape[1]:,} features, "
        f"{time.perf_counter() - started:.1f} s",
        settings.progress,
    )
    results = _evaluate_fixed("kmeans", train_x, test_x, train_y, test_y, settings, device, started)
    results["features"] = (
        f"Coates & Ng k-means features: {options['patch']}x{options['patch']} patches at stride "
        f"1, brightness/contrast normalised, ZCA-whitened, {options['centroids']:,} k-means "
        f"centres fit on {options['patches']:,} patches of train images only, triangle "
        f"encoding, sum-pooled over 4 quadrants: {train_x.shape[1]:,} features"
    )
    return results


def _evaluate_fixed(
    name: str,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    train_y: torch.Tensor,
    test_y: torch.Tensor,
    settings: EvalSettings,
    device: torch.device,
    started: float,
) -> dict:
    """Fixed (n, f) features of no network (raw pixels, hand-crafted) probed alike, as the one
    layer ``name``: the linear probe and k-NN; no MLP (it probes a conv map) and nothing to
    fine-tune."""
    inputs = Inputs({name: train_x}, {name: test_x}, train_y, test_y, settings, device)
    return {"protocols": probe_all(inputs), "seconds": time.perf_counter() - started}
