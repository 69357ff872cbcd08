"""Grounding metrics: temporal grounding (mIoU, R@t) and referring boxes (mIoU, Acc@t)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from metrics._common import IoUThresholdMetric, threshold_key
from metrics.boxes import BOX_FORMATS, check_boxes, span_iou, to_xyxy, xyxy_iou


class _MeanIoURecall(IoUThresholdMetric):
    """mIoU and recall at each threshold (IoU >= t) over samples."""

    _prefix = "R"

    def _add(self, iou: Tensor, nan_rows: Tensor) -> None:
        iou = iou.masked_fill(nan_rows, 0.0)
        thr = self._thr.to(iou.device)
        dev = self.iou_sum.device
        self.iou_sum += iou.sum().to(dev)
        self.count += iou.numel()
        self.hits += (iou[:, None] >= thr).sum(0).to(dev)
        self.num_nan_preds += nan_rows.sum().to(dev)

    def compute(self) -> dict[str, Tensor]:
        """Return {"mIoU", "<prefix>@t"...} as float64 scalars."""
        n = self.count.double()
        out = {"mIoU": self.iou_sum / n}
        for t, h in zip(self.thresholds, self.hits.unbind()):
            out[threshold_key(self._prefix, t)] = h.double() / n
        return out


class TemporalGroundingRecall(_MeanIoURecall):
    """Temporal grounding: mIoU is the mean tIoU, R@t the share of samples with tIoU >= t.

    `update(preds [N, 2], target [N, 2])` in seconds. tIoU uses the hull as the union; swapped or
    zero-length predictions score 0, a NaN prediction scores 0 and is counted by `nan_predictions()`.
    Targets must be finite with start <= end. Returns {"mIoU", "R@0.3", "R@0.5", "R@0.7"}.
    """

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7), **kwargs: object) -> None:
        super().__init__(thresholds, **kwargs)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add spans [N, 2] (start, end) in seconds."""
        preds, target, nan_rows = check_boxes(preds, target, width=2)
        if (target[:, 1] < target[:, 0]).any():
            raise ValueError("`target` spans must have start <= end")
        self._add(span_iou(preds, target), nan_rows)


class BoxGroundingAccuracy(_MeanIoURecall):
    """Referring-expression boxes (RefCOCO family): mean IoU and Acc@t, the share with IoU >= t.

    `update(preds [N, 4], target [N, 4])`; IoU as OneThinker's `iou_2d`. A NaN prediction scores 0
    and is counted by `nan_predictions()`. Returns {"mIoU", "Acc@0.5"}.
    """

    _prefix = "Acc"

    def __init__(
        self, thresholds: Sequence[float] = (0.5,), box_format: str = "xyxy", **kwargs: object
    ) -> None:
        super().__init__(thresholds, **kwargs)
        if box_format not in BOX_FORMATS:
            raise ValueError(f"`box_format` must be one of {BOX_FORMATS}, got {box_format!r}")
        self.box_format = box_format

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add boxes [N, 4] in `box_format`."""
        preds, target, nan_rows = check_boxes(preds, target)
        self._add(xyxy_iou(to_xyxy(preds, self.box_format), to_xyxy(target, self.box_format)), nan_rows)


class IoURecall(_MeanIoURecall):
    """Mean and recall of IoU values scored elsewhere, e.g. the per-sample sIoU of spatio-temporal
    grounding. `update(iou [N])`; a NaN IoU scores 0 and is counted by `nan_predictions()`.
    Returns {"mIoU", "R@t"...} with R@t the share of samples with IoU >= t.
    """

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7), **kwargs: object) -> None:
        super().__init__(thresholds, **kwargs)

    def update(self, iou: Tensor) -> None:
        """Add IoU values [N] in [0, 1]."""
        if not isinstance(iou, Tensor) or iou.ndim != 1:
            raise ValueError(f"`iou` must be a 1-D tensor, got {getattr(iou, 'shape', type(iou).__name__)}")
        iou = iou.double()
        finite = iou[~iou.isnan()]
        if ((finite < 0) | (finite > 1)).any():
            raise ValueError("`iou` values must lie in [0, 1]")
        self._add(iou, iou.isnan())
