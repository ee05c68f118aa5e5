"""Average precision from a ranked list, as the Pascal VOC devkit computes it: VOC2007's 11-point
interpolation (the paper's numbers) and VOC2010+'s all-point area under the precision envelope.
Shared by VOC classification and detection scoring, so both protocols interpolate the same way.
Neither is sklearn's ``average_precision_score`` (nor torchmetrics' ``MultilabelAveragePrecision``),
which sums precision at each recall step *without* the envelope: it equals the all-point AP only
where precision never rises along the ranking.

Detection scoring (:func:`voc_detection_ap`) follows the VOC devkit's VOCevaldet: per class,
detections ranked by score are each matched to the ground-truth box of highest IoU in their image
(the first of equals), a true positive when that IoU is >= 0.5 and the box is not yet found; a
match to a ``difficult`` box counts neither as a true nor as a false positive, a second detection
of a box is a false positive, and recall counts the non-difficult boxes only. Boxes are continuous
pixel coordinates (:class:`natlearn.data.voc.VOCImage`: ``[xmin - 1, xmax)`` of the XML's inclusive
1-based pixels), so a box's area is the devkit's ``(xmax - xmin + 1) * (ymax - ymin + 1)``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from natlearn.data.voc import VOCImage
from natlearn.errors import NatlearnError

__all__ = ["ELEVEN_POINTS", "average_precision", "precision_recall", "voc_detection_ap"]

# The 11-point recall thresholds exactly as py-faster-rcnn's voc_ap draws them (np.arange(0.0, 1.1,
# 0.1)), with no tolerance: in floating point 0.3, 0.6 and 0.7 come out a hair above their decimal
# value, so a recall of exactly 3/10 does not reach the 0.3 point (nor does the devkit's 0:0.1:1 at
# 0.3). MATLAB's colon fills its upper half down from 1, so there 0.6 and 0.7 are exact: the two
# references differ at those two points only.
ELEVEN_POINTS = torch.from_numpy(np.arange(0.0, 1.1, 0.1))


def precision_recall(
    true_positive: torch.Tensor, false_positive: torch.Tensor, positives: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall after each item of a ranked list (highest score first).

    Args:
        true_positive: (n,) bool, whether each ranked item counts as a true positive.
        false_positive: (n,) bool, whether it counts as a false positive; an item that is neither
            (a VOC ``difficult`` match) moves neither curve.
        positives: how many positives there are to find (recall's denominator), > 0.
    Returns:
        (precision, recall), each (n,) float64.
    """
    tp = true_positive.to(torch.float64).cumsum(0)
    fp = false_positive.to(torch.float64).cumsum(0)
    # An item that is neither TP nor FP at rank 1 leaves 0/0: precision 0 there, as the devkit's
    # eps guard gives.
    precision = tp / (tp + fp).clamp_min(torch.finfo(torch.float64).eps)
    return precision, tp / positives


def average_precision(
    precision: torch.Tensor, recall: torch.Tensor, eleven_point: bool = True
) -> float:
    """AP of a precision/recall curve ((n,) each, in rank order; recall non-decreasing).

    ``eleven_point``: VOC2007's mean over the 11 thresholds t of :data:`ELEVEN_POINTS` of the
    highest precision at recall >= t (0 where none); otherwise the area under the curve after
    making precision monotone (VOC2010+). An empty curve has AP 0.
    """
    precision, recall = precision.to(torch.float64), recall.to(torch.float64)
    if eleven_point:
        total = 0.0
        for t in ELEVEN_POINTS.tolist():
            reached = recall >= t
            total += float(precision[reached].max()) if bool(reached.any()) else 0.0
        return total / 11
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    rec = torch.cat([zero, recall, one])
    prec = torch.cat([zero, precision, zero])
    # The precision envelope: the best precision at this recall or beyond.
    prec = prec.flip(0).cummax(0).values.flip(0)
    steps = torch.nonzero(rec[1:] != rec[:-1]).squeeze(1)
    return float(((rec[steps + 1] - rec[steps]) * prec[steps + 1]).sum())


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
    if len(detections) != len(truth):
        raise NatlearnError(
            f"{len(detections)} images of detections for {len(truth)} annotated images"
        )
    result: dict[str, list] = {"ap11": [], "ap_all": [], "positives": []}
    for c in range(num_classes):
        tp, fp, positives = _matches(detections, truth, c, iou_threshold)
        result["positives"].append(positives)
        if positives == 0:
            result["ap11"].append(None)
            result["ap_all"].append(None)
            continue
        precision, recall = precision_recall(tp, fp, positives)
        result["ap11"].append(average_precision(precision, recall, eleven_point=True))
        result["ap_all"].append(average_precision(precision, recall, eleven_point=False))
    return result


def _matches(
    detections: Sequence[dict[str, torch.Tensor]],
    truth: Sequence[VOCImage],
    c: int,
    iou_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(true positive, false positive) flags of class ``c``'s detections ranked by score, and the
    class's non-difficult boxes."""
    from torchvision.ops import box_iou

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
    return tp, fp, positives
