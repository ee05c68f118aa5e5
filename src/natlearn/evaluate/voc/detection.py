"""Detection transfer: a natlearn network as the backbone of torchvision's Faster R-CNN
(:mod:`natlearn.evaluate.voc.detector`), fine-tuned on a VOC-format trainval split and scored on its
test split with the VOC protocol (mAP at IoU 0.5,
:func:`~natlearn.evaluate.voc.average_precision.voc_detection_ap`).

Every layer of the backbone is fine-tuned, as in the paper. Everything runs on the network's
device: the detector is built there and each image is moved there; detections come back to the CPU
to be scored.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import torch
from torch import nn

from natlearn.data.voc import VOC07, VOCImage, VOCSplit, load_image
from natlearn.errors import NatlearnError
from natlearn.evaluate.fit import choose_on_val, cpu_threads, fit_minibatches
from natlearn.evaluate.voc.average_precision import voc_detection_ap
from natlearn.evaluate.voc.detector import DetectionSettings, detection_model, model_device
from natlearn.models import Network
from natlearn.progress import say, steps

__all__ = ["detection_transfer", "voc07_detection"]


def _read(image: VOCImage, device: torch.device) -> torch.Tensor:
    """The image as (3, H, W) float in [0, 1] on ``device``."""
    import numpy as np

    pixels = torch.from_numpy(np.array(load_image(image.path), dtype=np.uint8))
    return pixels.to(device).permute(2, 0, 1).float() / 255


def _target(
    image: VOCImage, width: int, flip: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """The training target of an image on ``device``: its non-difficult boxes (Fast R-CNN's VOC
    training leaves difficult objects out), labels shifted by one past the background class 0;
    mirrored when ``flip``."""
    keep = ~image.difficult
    boxes, labels = image.boxes[keep].clone(), image.labels[keep] + 1
    if flip:
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return {"boxes": boxes.to(device), "labels": labels.to(device)}


def _check_splits(train: VOCSplit, test: VOCSplit) -> None:
    """Refuse splits with other classes, no images or a malformed box, in one line."""
    if train.classes != test.classes:
        raise NatlearnError(
            "the train and test splits name different classes; read the test split with "
            "classes= the train split's"
        )
    if not len(train) or not len(test):
        raise NatlearnError("detection transfer needs images in both the train and test splits")
    for split, name in ((train, "train"), (test, "test")):
        _check_boxes(split, name)


def _check_boxes(split: VOCSplit, name: str) -> None:
    for image in split.images:
        boxes = image.boxes
        if len(boxes) and not bool(
            ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        ):
            raise NatlearnError(
                f"{image.path.name} of the {name} split has an empty box (xmax <= xmin or "
                "ymax <= ymin); fix its annotation"
            )


def detection_transfer(
    network: Network,
    train: VOCSplit,
    test: VOCSplit,
    settings: DetectionSettings,
    progress: bool = True,
) -> dict:
    """Fine-tune Faster R-CNN on ``network`` (a copy; ``network`` is left as it is) on ``train``
    and score it on ``test`` with the VOC protocol.

    Training: SGD (momentum, weight decay) under a cosine schedule for ``settings.epochs`` passes,
    random horizontal flips, every parameter trained; seeded by ``settings.seed`` (new layers,
    batch order, flips), the global RNG left as it was.

    Returns:
        ``classes``; ``ap11`` and ``ap_all`` (class -> AP, None for a class with no non-difficult
        test object); ``map11`` (VOC2007 11-point, the paper's) and ``map_all`` (all-point), means
        over the scored classes; ``positives`` per class; ``settings`` (resolved);
        ``losses`` (mean training loss per epoch); ``seconds`` (``train``, ``test``); image counts.
    """
    settings = settings.resolved()
    _check_splits(train, test)
    device = model_device(network)
    # The RPN and box sampler draw on the model's device: a GPU's generator is restored as well.
    gpus = []
    if device.type == "cuda":
        gpus = [torch.cuda.current_device() if device.index is None else device.index]
    with cpu_threads(settings.threads or None), torch.random.fork_rng(devices=gpus):
        torch.manual_seed(settings.seed)
        model = detection_model(network, len(train.classes), settings)
        started = time.perf_counter()
        losses = _fine_tune(model, train, settings, progress)
        trained = time.perf_counter()
        detections = _detect(model, test, settings.batch_size, progress)
        scores = voc_detection_ap(
            detections, test.images, len(test.classes), settings.iou_threshold
        )
        tested = time.perf_counter()
    ap11 = dict(zip(test.classes, scores["ap11"], strict=True))
    ap_all = dict(zip(test.classes, scores["ap_all"], strict=True))
    return {
        "classes": list(test.classes),
        "ap11": ap11,
        "ap_all": ap_all,
        "map11": _mean(scores["ap11"]),
        "map_all": _mean(scores["ap_all"]),
        "positives": dict(zip(test.classes, scores["positives"], strict=True)),
        "layer": model.backbone.layer,
        "settings": dataclasses.asdict(settings),
        "losses": losses,
        "train_images": len(train),
        "test_images": len(test),
        "seconds": {"train": round(trained - started, 1), "test": round(tested - trained, 1)},
    }


def voc07_detection(
    network: Network,
    data: VOC07,
    settings: DetectionSettings,
    lrs: Sequence[float] = (),
    progress: bool = True,
) -> dict:
    """Detection transfer by the VOC2007 protocol: with several learning rates ``lrs``, each
    fine-tunes on ``data.train`` and is scored on ``data.val`` (11-point mAP); the best (or the one
    given; none: ``settings.lr``) fine-tunes on train + val and is scored once on ``data.test``.

    Returns:
        :func:`detection_transfer`'s results on test, with ``lr``, ``lr_chosen_on`` (``val`` or
        ``given``) and ``val_map11`` (lr -> val 11-point mAP, when there was a choice).
    """

    def val_map11(lr: float) -> float | None:
        say(f"detection: lr {lr:g}, fit on train, scored on val", progress)
        tried = dataclasses.replace(settings, lr=lr)
        return detection_transfer(network, data.train, data.val, tried, progress)["map11"]

    lrs = tuple(lrs) or (settings.lr,)
    chosen, by_lr = choose_on_val(lrs, val_map11)
    trainval = VOCSplit(data.train.images + data.val.images, data.classes)
    final = dataclasses.replace(settings, lr=chosen)
    results = detection_transfer(network, trainval, data.test, final, progress)
    chosen_on = "val" if len(lrs) > 1 else "given"
    return {**results, "lr": chosen, "lr_chosen_on": chosen_on, "val_map11": by_lr}


def _mean(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _fine_tune(
    model: nn.Module, train: VOCSplit, settings: DetectionSettings, progress: bool
) -> list[float]:
    """Train ``model`` in place, on its device; the mean loss of each epoch."""
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    generator = torch.Generator().manual_seed(settings.seed)
    per_epoch = -(-len(train) // settings.batch_size)
    sums: list[float] = []
    done = 0

    def batch_loss(ids: torch.Tensor) -> torch.Tensor:
        nonlocal done
        images, targets = [], []
        for i in ids.tolist():
            image = _read(train.images[i], device)
            flip = settings.flip and bool(torch.rand((), generator=generator) < 0.5)
            images.append(image.flip(-1) if flip else image)
            targets.append(_target(train.images[i], image.shape[-1], flip, device))
        loss = sum(model(images, targets).values())
        if not torch.isfinite(loss):
            raise NatlearnError(
                f"detection fine-tuning: the loss became {float(loss)} at step {done + 1}; "
                f"lower lr (now {settings.lr:g})"
            )
        epoch = done // per_epoch
        if epoch == len(sums):
            sums.append(0.0)
            if epoch and progress:
                say(f"detection epoch {epoch}: loss {sums[-2] / per_epoch:.4f}", progress)
        sums[epoch] += float(loss.detach())
        done += 1
        return loss

    model.train()
    fit_minibatches(
        optimizer,
        batch_loss,
        rows=torch.arange(len(train)),
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        generator=generator,
        batching="even",
        label="detection fine-tuning",
        progress=progress,
    )
    losses = [round(total / per_epoch, 5) for total in sums]
    say(f"detection epoch {len(losses)}: loss {losses[-1]:.4f}", progress)
    return losses


def _detect(
    model: nn.Module, test: VOCSplit, batch_size: int, progress: bool
) -> list[dict[str, torch.Tensor]]:
    """Detections of every test image, on the CPU: ``boxes`` (k, 4) in its pixels, ``scores``
    (k,), ``labels`` (k,) 0-based class indices."""
    device = model_device(model)
    model.eval()
    found: list[dict[str, torch.Tensor]] = []
    batches = range(0, len(test), batch_size)
    with torch.inference_mode():
        for start in steps(batches, "detecting", enabled=progress, every=10.0, unit="batches"):
            images = [_read(image, device) for image in test.images[start : start + batch_size]]
            for output in model(images):
                output = {key: value.cpu() for key, value in output.items()}
                found.append({**output, "labels": output["labels"] - 1})
    return found
