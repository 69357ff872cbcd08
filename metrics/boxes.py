"""Box and span validation and IoU helpers shared by the tracking and grounding metrics."""

from __future__ import annotations

import torch
from torch import Tensor

BOX_FORMATS = ("xywh", "xyxy")
_EPS = float(torch.finfo(torch.float64).eps)  # numpy's np.finfo(float).eps, used by got10k


def check_boxes(preds: Tensor, target: Tensor, width: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Validate [N, width] prediction/target pairs; return them as float64 with the NaN-prediction mask.

    Raises ValueError for non-tensors, wrong dims, mismatched shapes, any non-finite target value
    and infinite prediction values. A prediction row holding NaN is reported in the returned mask
    (its values are zeroed) so callers can score it 0 instead of propagating NaN.
    """
    for name, x in (("preds", preds), ("target", target)):
        if not isinstance(x, Tensor):
            raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[-1] != width:
            raise ValueError(f"`{name}` must have shape [N, {width}], got {tuple(x.shape)}")
    if preds.shape != target.shape:
        raise ValueError(
            f"`preds` and `target` must have the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    preds = preds.to(dtype=torch.float64)
    target = target.to(device=preds.device, dtype=torch.float64)
    if not torch.isfinite(target).all():
        raise ValueError("`target` contains non-finite values (NaN or inf)")
    if torch.isinf(preds).any():
        raise ValueError("`preds` contains infinite values")
    nan_rows = torch.isnan(preds).any(-1)
    preds = torch.where(nan_rows[:, None], torch.zeros_like(preds), preds)
    return preds, target, nan_rows


def to_xywh(boxes: Tensor, box_format: str) -> Tensor:
    """Convert [N, 4] boxes to xywh."""
    if box_format == "xywh":
        return boxes
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], -1)


def to_xyxy(boxes: Tensor, box_format: str) -> Tensor:
    """Convert [N, 4] boxes to xyxy."""
    if box_format == "xyxy":
        return boxes
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], -1)


def got10k_clip(boxes: Tensor, width: float | Tensor, height: float | Tensor) -> Tensor:
    """Clip xywh boxes as got10k's `rect_iou(bound=...)` does (``width``/``height``: one bound, or one per row).

    x to [0, W] and y to [0, H], then w to [0, W - x] and h to [0, H - y] using the clipped x, y.
    A box lying fully outside the image therefore becomes zero-area at the image edge.
    """
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    x = torch.minimum(boxes[:, 0].clamp(min=0), width)
    y = torch.minimum(boxes[:, 1].clamp(min=0), height)
    w = torch.minimum(boxes[:, 2].clamp(min=0), width - x)
    h = torch.minimum(boxes[:, 3].clamp(min=0), height - y)
    return torch.stack([x, y, w, h], -1)


def got10k_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xywh boxes exactly as got10k's `rect_iou`: inter / (union + eps), clipped to [0, 1].

    Areas are w * h without clamping, as in the toolkit; a zero-area box scores 0.
    """
    x1 = torch.maximum(a[:, 0], b[:, 0])
    y1 = torch.maximum(a[:, 1], b[:, 1])
    x2 = torch.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = torch.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    iou = (inter / (union + _EPS)).clamp(0.0, 1.0)
    return torch.nan_to_num(iou, nan=0.0)


def xyxy_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xyxy boxes as OneThinker's `iou_2d`: negative sides count 0, union <= 1e-12 scores 0."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter
    ok = union > 1e-12
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(union))


def span_iou(a: Tensor, b: Tensor) -> Tensor:
    """Temporal IoU of [N, 2] spans as OneThinker's `iou_1d`: union is the hull, <= 1e-12 scores 0.

    Swapped or zero-length predicted spans score 0.
    """
    inter = (torch.minimum(a[:, 1], b[:, 1]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    union = torch.maximum(a[:, 1], b[:, 1]) - torch.minimum(a[:, 0], b[:, 0])
    ok = union > 1e-12
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(union))
