"""Detection transfer: a natlearn network as the backbone of torchvision's Faster R-CNN, fine-tuned
on a VOC-format trainval split and scored on its test split with the VOC protocol (mAP at IoU 0.5).

The paper transfers NAT to Pascal VOC2007 detection with Fast R-CNN; Faster R-CNN is the same
detector with a learnt region proposal network instead of selective search, and is what torchvision
maintains. Every layer of the backbone is fine-tuned, as in the paper.

Scoring (:func:`voc_detection_ap`) follows the VOC devkit's VOCevaldet: per class, detections
ranked by score are each matched to the ground-truth box of highest IoU in their image (the first
of equals), a true positive when that IoU is >= 0.5 and the box is not yet found; a match to a
``difficult`` box counts neither as a true nor as a false positive, a second detection of a box is
a false positive, and recall counts the non-difficult boxes only. Boxes are continuous pixel
coordinates (:class:`natlearn.data.voc.VOCImage`: ``[xmin - 1, xmax)`` of the XML's inclusive
1-based pixels), so a box's area is the devkit's ``(xmax - xmin + 1) * (ymax - ymin + 1)``.

Everything runs on the network's device: the detector is built there and each image is moved
there; detections come back to the CPU to be scored.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from natlearn.choices import timm_model_name
from natlearn.data.voc import VOC07, VOCImage, VOCSplit, load_image
from natlearn.errors import NatlearnError
from natlearn.evaluate.average_precision import average_precision, precision_recall
from natlearn.evaluate.fit import fit_minibatches
from natlearn.evaluate.probes import best_index, cpu_threads
from natlearn.models import Network
from natlearn.models.timm_backbone import is_timm_arch, timm_fixed_input_size
from natlearn.progress import say, steps

__all__ = [
    "DetectionSettings",
    "NetworkBackbone",
    "detection_layer",
    "detection_model",
    "detection_transfer",
    "voc07_detection",
    "voc_detection_ap",
]


@dataclass
class DetectionSettings:
    """How the detector is built, fine-tuned and scored.

    ``image_size``: the short side images are resized to (Fast R-CNN: 600), ``max_size`` the cap on
    the long side (0: 5/3 of ``image_size``, Fast R-CNN's 600/1000). ``layer``: the trunk block
    whose map the detector uses (None: the last conv block or stage, before the neck; the paper's
    conv5). ``anchor_sizes``: anchor sides in pixels of the resized image (empty: ``image_size``
    times 1/8, 1/4, 1/2 and 1, objects from a few percent of the image to all of it).
    ``box_head_width``, ``rois_per_image``, ``roi_sampling`` and the proposal counts default to
    torchvision's; smaller ones make a CPU run affordable (small images need fewer proposals).
    ``threads``: torch CPU threads while it runs (0: as set).
    """

    image_size: int = 600
    max_size: int = 0
    layer: str | None = None
    anchor_sizes: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 4
    flip: bool = True
    box_head_width: int = 1024
    rois_per_image: int = 512
    roi_sampling: int = 2  # RoIAlign samples per bin side (its CPU backward dominates a step)
    proposals_train: int = 2000  # RPN boxes kept before and after NMS (torchvision's defaults)
    proposals_test: int = 1000
    score_threshold: float = 0.05  # torchvision's: detections below it are not scored
    detections_per_image: int = 100
    iou_threshold: float = 0.5
    seed: int = 0
    threads: int = 0

    def resolved(self) -> DetectionSettings:
        """These settings with ``max_size`` and ``anchor_sizes`` filled in; raises NatlearnError
        for values no detector can use."""
        positive = ("image_size", "epochs", "batch_size", "box_head_width", "rois_per_image")
        for name in (*positive, "roi_sampling", "proposals_train", "proposals_test"):
            if getattr(self, name) < 1:
                raise NatlearnError(f"detection {name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise NatlearnError(f"detection lr={self.lr} must be a positive number")
        if not 0 < self.iou_threshold < 1:
            raise NatlearnError(f"detection iou_threshold={self.iou_threshold} must be in (0, 1)")
        max_size = self.max_size or round(self.image_size * 5 / 3)
        if max_size < self.image_size:
            raise NatlearnError(
                f"detection max_size={max_size} is below image_size={self.image_size}; "
                "give max_size >= image_size (0: 5/3 of it)"
            )
        sizes = self.anchor_sizes or tuple(
            max(4, round(self.image_size * f)) for f in (1 / 8, 1 / 4, 1 / 2, 1)
        )
        return dataclasses.replace(self, max_size=max_size, anchor_sizes=tuple(sizes))


def detection_layer(arch: str, trunk: Sequence[str], layer: str | None) -> str:
    """The trunk block the detector reads on a network of ``arch`` whose trunk blocks are
    ``trunk`` (in order): ``layer``, or the last block (the paper's conv5).

    Checked from the config alone, so ``natlearn transfer`` refuses before any work (one line,
    NatlearnError): a layer that is no trunk block (``neck`` and ``head`` hold no feature map), and
    a network that takes one input size only (a timm ViT or Swin): the detector resizes each image
    with its aspect kept, so sizes vary from image to image.
    """
    if is_timm_arch(arch) and timm_fixed_input_size(timm_model_name(arch)):
        raise NatlearnError(
            f"arch={arch} takes images of one fixed size only, but the detector feeds it images "
            "of varying size (resized with their aspect kept); detect with a convolutional "
            "network (e.g. arch=resnet18, timm:resnet18, timm:convnext_atto), or --task classify"
        )
    chosen = layer or trunk[-1]
    if chosen not in trunk:
        raise NatlearnError(
            f"detection layer {chosen!r} (--detect-layer) is not a trunk block of arch={arch}: "
            f"the detector needs a feature map; give one of {', '.join(trunk)}"
        )
    return chosen


class NetworkBackbone(nn.Module):
    """A natlearn network's input layer and trunk up to ``layer``, as a torchvision detection
    backbone: the input layer (normalisation, gray or Sobel) runs here, so the trunk sees what it
    saw in pre-training; the detector's own transform only resizes.

    Shapes: (b, 3, H, W) in [0, 1] -> (b, out_channels, H / s, W / s), s the layer's stride.
    """

    def __init__(self, network: Network, layer: str | None = None, probe_size: int = 64):
        super().__init__()
        self.layer = detection_layer(network.arch, network.conv_names, layer)
        # Only the input layer and trunk: the neck and head are neither trained nor saved.
        self.input, self.convs = network.input, network.convs
        with torch.no_grad():
            was_training = self.training
            self.eval()  # BatchNorm on one probe image in train mode would update its statistics
            probe = torch.zeros(1, 3, probe_size, probe_size, device=_device(network))
            self.out_channels = int(self(probe).shape[1])
            self.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input.in_channels == 1 and images.shape[1] == 3:  # a gray-trained network
            images = images.mean(dim=1, keepdim=True)
        # Network's own walk of its trunk (pools included), on this module's input layer and trunk.
        for name, output in Network._trunk_outputs(self, self.input(images)):  # type: ignore[arg-type]
            if name == self.layer:
                return output
        raise AssertionError(f"trunk never produced {self.layer}")  # checked in __init__


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def detection_model(network: Network, num_classes: int, settings: DetectionSettings) -> nn.Module:
    """Faster R-CNN on a copy of ``network``'s trunk (``settings`` resolved): one feature map, the
    anchors and box head of ``settings``, ``num_classes`` object classes plus background. Its
    transform resizes to ``image_size`` and leaves the pixel values alone (mean 0, std 1): the
    network's input layer normalises them as in pre-training. New layers are drawn from the global
    torch CPU RNG (the same draw on every device), then the model is moved to ``network``'s
    device."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = NetworkBackbone(copy.deepcopy(network), settings.layer, settings.image_size)
    pool = 7  # torchvision's RoIAlign output (Fast R-CNN's RoI pooling to AlexNet's 6x6, near)
    detector = FasterRCNN(
        backbone,
        min_size=settings.image_size,
        max_size=settings.max_size,
        image_mean=[0.0],
        image_std=[1.0],
        rpn_anchor_generator=AnchorGenerator(
            sizes=(settings.anchor_sizes,), aspect_ratios=(settings.aspect_ratios,)
        ),
        box_roi_pool=MultiScaleRoIAlign(
            ["0"], output_size=pool, sampling_ratio=settings.roi_sampling
        ),
        box_head=TwoMLPHead(backbone.out_channels * pool * pool, settings.box_head_width),
        box_predictor=FastRCNNPredictor(settings.box_head_width, num_classes + 1),
        box_batch_size_per_image=settings.rois_per_image,
        rpn_pre_nms_top_n_train=settings.proposals_train,
        rpn_post_nms_top_n_train=settings.proposals_train,
        rpn_pre_nms_top_n_test=settings.proposals_test,
        rpn_post_nms_top_n_test=settings.proposals_test,
        box_score_thresh=settings.score_threshold,
        box_detections_per_img=settings.detections_per_image,
    )
    return detector.to(_device(network))


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
    if train.classes != test.classes:
        raise NatlearnError(
            "the train and test splits name different classes; read the test split with "
            "classes= the train split's"
        )
    if not len(train) or not len(test):
        raise NatlearnError("detection transfer needs images in both the train and test splits")
    for split, name in ((train, "train"), (test, "test")):
        _check_boxes(split, name)
    device = _device(network)
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
    lrs = tuple(lrs) or (settings.lr,)
    val_map11: dict[str, float | None] = {}
    if len(lrs) > 1:
        for lr in lrs:
            say(f"detection: lr {lr:g}, fit on train, scored on val", progress)
            tried = dataclasses.replace(settings, lr=lr)
            found = detection_transfer(network, data.train, data.val, tried, progress)
            val_map11[f"{lr:g}"] = found["map11"]
        # a val mAP of None (no class scored) ranks last
        chosen = lrs[best_index([val_map11[f"{lr:g}"] or -1.0 for lr in lrs])]
    else:
        chosen = lrs[0]
    trainval = VOCSplit(data.train.images + data.val.images, data.classes)
    final = dataclasses.replace(settings, lr=chosen)
    results = detection_transfer(network, trainval, data.test, final, progress)
    chosen_on = "val" if len(lrs) > 1 else "given"
    return {**results, "lr": chosen, "lr_chosen_on": chosen_on, "val_map11": val_map11}


def _mean(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def _fine_tune(
    model: nn.Module, train: VOCSplit, settings: DetectionSettings, progress: bool
) -> list[float]:
    """Train ``model`` in place, on its device; the mean loss of each epoch."""
    device = _device(model)
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
    device = _device(model)
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


def voc_detection_ap(
    detections: Sequence[dict[str, torch.Tensor]],
    truth: Sequence[VOCImage],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[str, list]:
    """Per-class VOC average precision of ``detections`` against ``truth`` (same image order).

    Args:
        detections: per image, ``boxes`` (k, 4) xmin, ymin, xmax, ymax; ``scores`` (k,);
            ``labels`` (k,) 0-based class indices.
        truth: per image, its boxes (m, 4), labels (m,) and difficult flags (m,).
    Returns:
        ``ap11`` and ``ap_all``: lists of length ``num_classes`` (None for a class without a
        non-difficult box: nothing to recall); ``positives``: the non-difficult boxes per class.
    """
    from torchvision.ops import box_iou

    if len(detections) != len(truth):
        raise NatlearnError(
            f"{len(detections)} images of detections for {len(truth)} annotated images"
        )
    result: dict[str, list] = {"ap11": [], "ap_all": [], "positives": []}
    for c in range(num_classes):
        gt = [(t.boxes[t.labels == c], t.difficult[t.labels == c]) for t in truth]
        positives = sum(int((~hard).sum()) for _, hard in gt)
        found = [
            (i, d["scores"][d["labels"] == c], d["boxes"][d["labels"] == c])
            for i, d in enumerate(detections)
        ]
        image_of = torch.cat([torch.full((len(s),), i) for i, s, _ in found])
        scores = torch.cat([s for _, s, _ in found])
        boxes = torch.cat([b.reshape(-1, 4) for _, _, b in found])
        order = torch.argsort(scores, descending=True, stable=True)
        matched = [torch.zeros(len(b), dtype=torch.bool) for b, _ in gt]
        tp = torch.zeros(len(order), dtype=torch.bool)
        fp = torch.zeros(len(order), dtype=torch.bool)
        for rank, d in enumerate(order.tolist()):
            i = int(image_of[d])
            gt_boxes, hard = gt[i]
            best, overlap = 0, 0.0
            if len(gt_boxes):
                # Our boxes are continuous 0-based coordinates: a ground-truth box is [x1 - 1, x2)
                # of the XML's 1-based inclusive pixels x1..x2 (data.voc), a detection is
                # torchvision's continuous box, the devkit's (x1 + 1, y1 + 1, x2, y2). So the
                # devkit's IoU with its +1 widths (x2 - x1 + 1) is the plain IoU here, no +1;
                # float64 as MATLAB's. argmax: the first of equal overlaps (`if ov > ovmax`).
                iou = box_iou(boxes[d : d + 1].double(), gt_boxes.double())[0]
                best = int(iou.argmax())
                overlap = float(iou[best])
            if overlap < iou_threshold:  # the devkit's test: ovmax >= VOCopts.minoverlap
                fp[rank] = True
            elif hard[best]:
                continue  # a difficult box found: neither right nor wrong
            elif matched[i][best]:
                fp[rank] = True  # a duplicate detection of a box already found
            else:
                tp[rank] = matched[i][best] = True
        result["positives"].append(positives)
        if positives == 0:
            result["ap11"].append(None)
            result["ap_all"].append(None)
            continue
        precision, recall = precision_recall(tp, fp, positives)
        result["ap11"].append(average_precision(precision, recall, eleven_point=True))
        result["ap_all"].append(average_precision(precision, recall, eleven_point=False))
    return result
