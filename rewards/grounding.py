"""Temporal, spatial and spatio-temporal grounding, and tracking (SPEC §5)."""

from __future__ import annotations

import math
from typing import Any

from .format import spatial_structure, spatial_temporal_structure, temporal_structure, tracking_structure
from .parsing import all_finite, as_number_list, load_gt_json, load_json
from .registry import register_reward

__all__ = [
    "temporal_iou",
    "box_iou",
    "temporal_grounding_accuracy",
    "spatial_grounding_accuracy",
    "spatial_temporal_accuracy",
    "tracking_accuracy",
    "check_span",
    "check_box",
    "shared_seconds_iou",
]


def temporal_iou(pred: Any, gt: Any) -> float:
    """tIoU of two `[s, e]` spans (values `float()` accepts); union is the hull, as released.

    Swapped, zero-length or non-finite spans score 0.
    """
    p, g = as_number_list(pred, 2), as_number_list(gt, 2)
    if p is None or g is None or not all_finite(p + g):
        return 0.0
    (s1, e1), (s2, e2) = p, g
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = max(e1, e2) - min(s1, s2)
    v = inter / union if union > 1e-12 else 0.0
    return v if math.isfinite(v) else 0.0


def box_iou(pred: Any, gt: Any) -> float:
    """IoU of two `[x1, y1, x2, y2]` boxes (values `float()` accepts); invalid or non-finite → 0."""
    p, g = as_number_list(pred, 4), as_number_list(gt, 4)
    if p is None or g is None or not all_finite(p + g):
        return 0.0
    x1, y1, x2, y2 = p
    X1, Y1, X2, Y2 = g
    inter = max(0.0, min(x2, X2) - max(x1, X1)) * max(0.0, min(y2, Y2) - max(y1, Y1))
    area1 = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area2 = max(0.0, X2 - X1) * max(0.0, Y2 - Y1)
    union = area1 + area2 - inter
    v = inter / union if union > 1e-12 else 0.0
    return v if math.isfinite(v) else 0.0  # inf/inf for absurdly large boxes


def shared_seconds_iou(pred: Any, gt: Any) -> float:
    """sIoU: mean box IoU over the seconds both ``{second: box}`` objects hold (keys compared as
    strings, in prediction order); 0 when they share none or either is not an object."""
    if not isinstance(pred, dict) or not isinstance(gt, dict):
        return 0.0
    common = [k for k in pred if k in gt]
    return sum(box_iou(pred[k], gt[k]) for k in common) / len(common) if common else 0.0


def check_span(x: Any) -> str | None:
    """Reason a ground-truth span is unusable, or None."""
    v = as_number_list(x, 2)
    if v is None or not all_finite(v):
        return f"time must be 2 finite numbers, got {str(x)[:60]}"
    return None if v[0] < v[1] else f"empty or swapped span {v}"


def check_box(x: Any) -> str | None:
    """Reason a ground-truth box is unusable, or None."""
    v = as_number_list(x, 4)
    if v is None or not all_finite(v):
        return f"box must be 4 finite numbers, got {str(x)[:60]}"
    return None if v[0] < v[2] and v[1] < v[3] else f"empty or swapped box {v}"


def _gt_dict(gt: str) -> dict | None:
    obj = load_gt_json(gt)
    return obj if isinstance(obj, dict) else None


def _check_boxes_dict(boxes: Any) -> str | None:
    if not isinstance(boxes, dict) or not boxes:
        return "boxes must be a non-empty {second: box} object"
    for k, b in boxes.items():
        reason = check_box(b)
        if reason:
            return f"second {k}: {reason}"
    return None


def _check_temporal(gt: str) -> str | None:
    obj = _gt_dict(gt)
    return "not a JSON object" if obj is None else check_span(obj.get("time"))


def _check_spatial(gt: str) -> str | None:
    obj = _gt_dict(gt)
    return "not a JSON object" if obj is None else check_box(obj.get("boxes"))


def _check_spatial_temporal(gt: str) -> str | None:
    obj = _gt_dict(gt)
    if obj is None:
        return "not a JSON object"
    return check_span(obj.get("time")) or _check_boxes_dict(obj.get("boxes"))


def _check_tracking(gt: str) -> str | None:
    obj = _gt_dict(gt)
    return "not a JSON object" if obj is None else _check_boxes_dict(obj.get("boxes"))


def _both_dicts(pred: str, gt: str) -> tuple[dict, dict] | None:
    p, g = load_json(pred), load_gt_json(gt)
    return (p, g) if isinstance(p, dict) and isinstance(g, dict) else None


@register_reward("temporal grounding", structure=temporal_structure, check_answer=_check_temporal)
def temporal_grounding_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """tIoU of `{"time": [s, e]}`."""
    objs = _both_dicts(pred, gt)
    return temporal_iou(objs[0].get("time"), objs[1].get("time")) if objs else 0.0


@register_reward("spatial grounding", structure=spatial_structure, check_answer=_check_spatial)
def spatial_grounding_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """Box IoU of `{"boxes": [x1, y1, x2, y2]}`."""
    objs = _both_dicts(pred, gt)
    return box_iou(objs[0].get("boxes"), objs[1].get("boxes")) if objs else 0.0


@register_reward(
    "spatial-temporal grounding", structure=spatial_temporal_structure, check_answer=_check_spatial_temporal
)
def spatial_temporal_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """released: 0.5·tIoU + 0.5·mean box IoU over seconds in both; paper: the plain sum."""
    objs = _both_dicts(pred, gt)
    if not objs:
        return 0.0
    p, g = objs
    tiou = temporal_iou(p.get("time"), g.get("time"))
    miou = shared_seconds_iou(p.get("boxes"), g.get("boxes"))
    return tiou + miou if variant == "paper" else 0.5 * tiou + 0.5 * miou


@register_reward("tracking", structure=tracking_structure, check_answer=_check_tracking)
def tracking_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """Mean box IoU over the GT seconds; a missing second scores 0."""
    objs = _both_dicts(pred, gt)
    if not objs:
        return 0.0
    pb, gb = objs[0].get("boxes"), objs[1].get("boxes")
    if not isinstance(pb, dict) or not isinstance(gb, dict) or not gb:
        return 0.0
    total = 0.0
    for k, gbox in gb.items():
        total += box_iou(pb.get(k), gbox)
    return total / len(gb)
