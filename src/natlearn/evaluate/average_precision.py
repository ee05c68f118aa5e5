"""Average precision from a ranked list, as the Pascal VOC devkit computes it: VOC2007's 11-point
interpolation (the paper's numbers) and VOC2010+'s all-point area. Shared by VOC classification and
detection scoring, so both protocols interpolate the same way."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ELEVEN_POINTS", "average_precision", "precision_recall"]

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
