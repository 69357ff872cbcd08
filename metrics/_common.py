"""Helpers shared by the box and span metrics: thresholds, key names, the NaN-prediction count."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Return thresholds as a tuple of floats in [0, 1]; raise ValueError otherwise."""
    try:
        out = tuple(float(t) for t in thresholds)
    except TypeError as err:
        raise ValueError(f"`thresholds` must be a sequence of numbers, got {thresholds!r}") from err
    if not out or any(not math.isfinite(t) or not 0.0 <= t <= 1.0 for t in out):
        raise ValueError(
            f"`thresholds` must be a non-empty sequence of numbers in [0, 1], got {thresholds!r}"
        )
    return out


def threshold_key(prefix: str, t: float) -> str:
    """Metric key such as "SR@0.5" or "R@0.75"."""
    return f"{prefix}@{t:g}"


class NanPredictionCount(Metric):
    """Mixin state `num_nan_preds`: NaN prediction rows that were scored as IoU 0."""

    num_nan_preds: Tensor

    def _add_nan_state(self) -> None:
        self.add_state("num_nan_preds", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def nan_predictions(self) -> Tensor:
        """NaN prediction rows scored so far, summed over all processes."""
        with self.sync_context():
            return self.num_nan_preds.clone()


class IoUThresholdMetric(NanPredictionCount):
    """The summed state of a mean-IoU-with-thresholds metric (grounding recall, tracking AO/SR): the
    thresholds and their buffer, ``iou_sum``, ``count``, ``hits`` per threshold and the NaN count."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    iou_sum: Tensor
    count: Tensor
    hits: Tensor

    def __init__(self, thresholds: Sequence[float], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.thresholds = check_thresholds(thresholds)
        self.register_buffer("_thr", torch.tensor(self.thresholds, dtype=torch.float64), persistent=False)
        self.add_state("iou_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(self.thresholds), dtype=torch.int64), dist_reduce_fx="sum")
        self._add_nan_state()
