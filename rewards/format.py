"""Format reward and per-task structure bonus (SPEC §5, released semantics)."""

from __future__ import annotations

from typing import Any

from .parsing import as_number_list, format_ok, is_json_number, load_gt_json, load_json

__all__ = [
    "format_reward",
    "temporal_structure",
    "spatial_structure",
    "spatial_temporal_structure",
    "tracking_structure",
    "segmentation_image_structure",
    "segmentation_video_structure",
]


def format_reward(normalized_response: str) -> float:
    """1 if `<think>…</think><answer>…</answer>` is the whole (normalized) response, else 0."""
    return 1.0 if format_ok(normalized_response) else 0.0


def temporal_structure(answer: str, gt: str) -> float:
    """0.5 for `{"time": [2 numbers]}`."""
    obj = load_json(answer)
    return 0.5 if isinstance(obj, dict) and as_number_list(obj.get("time"), 2) is not None else 0.0


def spatial_structure(answer: str, gt: str) -> float:
    """0.5 for `{"boxes": [4 numbers]}`."""
    obj = load_json(answer)
    return 0.5 if isinstance(obj, dict) and as_number_list(obj.get("boxes"), 4) is not None else 0.0


def _boxes_dict_ok(obj: dict) -> bool:
    boxes = obj.get("boxes")
    return isinstance(boxes, dict) and all(as_number_list(v, 4) is not None for v in boxes.values())


def _key_overlap(obj: Any, gt: str) -> float:
    """0.25 × the share of GT second-keys present in the prediction (schema validity not needed)."""
    gobj = load_gt_json(gt)
    if not isinstance(obj, dict) or not isinstance(gobj, dict):
        return 0.0
    pboxes, gboxes = obj.get("boxes", {}), gobj.get("boxes", {})
    if not isinstance(pboxes, dict) or not isinstance(gboxes, dict) or not gboxes:
        return 0.0
    return 0.25 * min(1.0, len(pboxes.keys() & gboxes.keys()) / len(gboxes))


def spatial_temporal_structure(answer: str, gt: str) -> float:
    """0.25 for `{"time": [2 items], "boxes": {sec: [4 numbers]}}` + 0.25 × GT key coverage."""
    obj = load_json(answer)
    ok = (
        isinstance(obj, dict)
        and isinstance(obj.get("time"), list)
        and len(obj["time"]) == 2  # released checks only the length here
        and _boxes_dict_ok(obj)
    )
    return (0.25 if ok else 0.0) + _key_overlap(obj, gt)


def tracking_structure(answer: str, gt: str) -> float:
    """0.25 for `{"boxes": {sec: [4 numbers]}}` + 0.25 × GT key coverage."""
    obj = load_json(answer)
    ok = isinstance(obj, dict) and _boxes_dict_ok(obj)
    return (0.25 if ok else 0.0) + _key_overlap(obj, gt)


def _three_points(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(as_number_list(p, 2) is not None for p in v)


def _segmentation_ok(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and as_number_list(obj.get("boxes"), 4) is not None
        and _three_points(obj.get("positive_points"))
        and _three_points(obj.get("negative_points"))
    )


def segmentation_image_structure(answer: str, gt: str) -> float:
    """0.5 for box + exactly 3 positive + 3 negative points."""
    return 0.5 if _segmentation_ok(load_json(answer)) else 0.0


def segmentation_video_structure(answer: str, gt: str) -> float:
    """0.5 for the image schema plus a JSON-number `time`."""
    obj = load_json(answer)
    return 0.5 if _segmentation_ok(obj) and is_json_number(obj.get("time")) else 0.0
