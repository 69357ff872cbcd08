"""Segmentation prompts: box + 3 positive + 3 negative points (+ key-frame time for video)."""

from __future__ import annotations

import itertools
import math
from typing import Any

from .format import segmentation_image_structure, segmentation_video_structure
from .grounding import box_iou, check_box
from .parsing import all_finite, as_float, as_number_list, is_json_number, load_gt_json, load_json
from .registry import register_reward

__all__ = [
    "point_similarity",
    "gaussian",
    "segmentation_image_accuracy",
    "segmentation_video_accuracy",
    "SIGMA_POINTS",
]

SIGMA_POINTS = 50.0  # pixels on the 0–1000 scale


def _points(v: Any) -> list[list[float]] | None:
    """Exactly 3 points of 2 values that `float()` accepts, converted."""
    if not isinstance(v, list) or len(v) != 3:
        return None
    pts = [as_number_list(p, 2) for p in v]
    return None if any(p is None for p in pts) else pts  # type: ignore[return-value]


def gaussian(d: float, sigma: float = SIGMA_POINTS) -> float:
    """G(d) = exp(−d²/(2σ²)); 0 for non-finite or overflowing d (released would raise there)."""
    if not math.isfinite(d):
        return 0.0
    d2 = d * d  # float multiply gives inf instead of raising like `d ** 2`
    return max(0.0, min(1.0, math.exp(-d2 / (2.0 * sigma * sigma))))


def point_similarity(pred: list[list[float]], gt: list[list[float]], sigma: float = SIGMA_POINTS) -> float:
    """G(d), d = smallest mean L2 distance over the 3! matchings of 3 ↔ 3 points."""
    best = math.inf
    for perm in itertools.permutations(range(3)):
        s = 0.0
        for i in range(3):
            p, q = pred[perm[i]], gt[i]
            s += math.hypot(p[0] - q[0], p[1] - q[1])
        if math.isfinite(s):
            best = min(best, s)
    return gaussian(best / 3.0, sigma) if math.isfinite(best) else 0.0


def _parts(pred: str, gt: str) -> tuple[float, float, float, dict, dict] | None:
    """(box IoU, G⁺, G⁻, pred, gt), or None when points are not exactly 3 + 3 on both sides."""
    p, g = load_json(pred), load_gt_json(gt)
    if not isinstance(p, dict) or not isinstance(g, dict):
        return None
    pts = [_points(d.get(k)) for k in ("positive_points", "negative_points") for d in (p, g)]
    if any(x is None for x in pts):
        return None
    pos_p, pos_g, neg_p, neg_g = pts
    iou = box_iou(p.get("boxes"), g.get("boxes"))  # an invalid box zeroes only this term
    return iou, point_similarity(pos_p, pos_g), point_similarity(neg_p, neg_g), p, g


def _check_points(obj: dict) -> str | None:
    for k in ("positive_points", "negative_points"):
        pts = _points(obj.get(k))
        if pts is None or not all_finite([c for pt in pts for c in pt]):
            return f"{k} must be exactly 3 finite [x, y] points"
    return None


def _check_image(gt: str) -> str | None:
    obj = load_gt_json(gt)
    if not isinstance(obj, dict):
        return "not a JSON object"
    return check_box(obj.get("boxes")) or _check_points(obj)


def _check_video(gt: str) -> str | None:
    reason = _check_image(gt)
    if reason:
        return reason
    t = load_gt_json(gt).get("time")
    if isinstance(t, bool) or not is_json_number(t) or not math.isfinite(float(t)):
        return f"time must be a finite number, got {str(t)[:40]}"
    return None


@register_reward(
    "segmentation", data_type="image", structure=segmentation_image_structure, check_answer=_check_image
)
def segmentation_image_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """0.5·IoU(box) + 0.25·G(d⁺) + 0.25·G(d⁻)."""
    parts = _parts(pred, gt)
    if parts is None:
        return 0.0
    iou, pos, neg, _, _ = parts
    return 0.5 * iou + 0.25 * pos + 0.25 * neg


def _time(v: Any) -> float | None:
    # released: isinstance(int, float) (so JSON true counts as 1); NaN is ours to reject.
    if not is_json_number(v):
        return None
    t = as_float(v)
    return None if t is None or math.isnan(t) else t


@register_reward(
    "segmentation", data_type="video", structure=segmentation_video_structure, check_answer=_check_video
)
def segmentation_video_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """released: 0.3·IoU + 0.3·exp(−|Δt|/2) + 0.2·G⁺ + 0.2·G⁻; paper: Gaussian σ = 1 s on Δt."""
    parts = _parts(pred, gt)
    if parts is None:
        return 0.0
    iou, pos, neg, p, g = parts
    tp, tg = _time(p.get("time")), _time(g.get("time"))
    if tp is None or tg is None:
        return 0.0
    dt = abs(tp - tg)
    time_sim = gaussian(dt, 1.0) if variant == "paper" else math.exp(-dt / 2.0) if math.isfinite(dt) else 0.0
    return 0.3 * iou + 0.3 * time_sim + 0.2 * pos + 0.2 * neg
