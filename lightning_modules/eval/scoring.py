"""Benchmark scores from evaluation predictions (pure: answer strings, boxes and masks in, metrics out).

One `BenchmarkScores` per evaluation file holds the torchmetrics of each task it contains and is fed
one prediction row at a time; SPEC §9 names the protocols. Unparseable answers are scored (IoU 0,
empty mask, accuracy 0), never dropped, and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import MeanMetric, Metric, SumMetric

from datamodules.tasks import QA_TYPES, task_key
from metrics import (
    AverageOverlap,
    BoxGroundingAccuracy,
    CumulativeIoU,
    IoURecall,
    JAndF,
    TemporalGroundingRecall,
)
from rewards import score
from rewards.grounding import shared_seconds_iou
from rewards.parsing import (
    answer_for_accuracy,
    as_number_list,
    load_json,
    normalize_response,
    strip_ground_truth,
)

NAN = float("nan")

PROTOCOLS = {
    "qa": "accuracy with the released reward semantics (SPEC §5), mean over samples",
    "temporal grounding": "tIoU with the hull as union; mIoU and R@t = share of samples with tIoU >= t",
    "spatial grounding": "box IoU on the 0-1000 scale (= pixel IoU); mIoU and Acc@0.5 = share with IoU >= 0.5",
    "spatial-temporal grounding": "tIoU as temporal grounding; sIoU = mean box IoU over the seconds both prediction "
    "and ground truth hold (0 when none); means and share >= 0.5",
    "tracking/onethinker": "OneThinker script: per-second boxes in pixels, a video scores its mean IoU over the "
    "ground-truth seconds (missing second = 0); AO = mean over videos, R@t = share of videos with mean IoU >= t",
    "tracking/got10k": "GOT-10k toolkit on per-frame ground truth: per-second predictions interpolated to frames, "
    "frame 0 and absent frames dropped, boxes clipped to the image, AO and SR@t (IoU > t) pooled over frames",
    "segmentation/image": "SAM2 masks from the predicted box and 3+3 points; cIoU = sum of intersections / sum of "
    "unions, gIoU = mean per-sample IoU",
    "segmentation/video": "SAM2 prompted on the key frame round(t*fps), propagated both ways; J&F = (mean J + mean F "
    "over all frames) / 2 per expression, averaged over expressions",
}


def answer_json(response: str, lenient: bool = False) -> Any:
    """The JSON object of a response's answer (released extraction), or None."""
    return load_json(answer_for_accuracy(normalize_response(response)), lenient=lenient)


def _finite(values: list[float] | None) -> list[float] | None:
    return values if values is not None and all(math.isfinite(v) for v in values) else None


def span_of(obj: Any) -> list[float] | None:
    """[start, end] of ``{"time": [s, e]}``, or None."""
    return _finite(as_number_list(obj.get("time"), 2)) if isinstance(obj, dict) else None


def box_of(obj: Any) -> list[float] | None:
    """[x1, y1, x2, y2] of ``{"boxes": [...]}``, or None."""
    return _finite(as_number_list(obj.get("boxes"), 4)) if isinstance(obj, dict) else None


def second_boxes(obj: Any) -> dict[str, list[float]]:
    """The valid boxes of ``{"boxes": {"<sec>": [x1, y1, x2, y2], ...}}``, keyed by second string."""
    boxes = obj.get("boxes") if isinstance(obj, dict) else None
    if not isinstance(boxes, dict):
        return {}
    out = {}
    for key, value in boxes.items():
        box = _finite(as_number_list(value, 4))
        if box is not None:
            out[str(key)] = box
    return out


def scale_box(box: list[float], width: float, height: float) -> list[float]:
    """A 0-1000 box in pixels."""
    return [box[0] * width / 1000, box[1] * height / 1000, box[2] * width / 1000, box[3] * height / 1000]


def frame_boxes_from_seconds(
    seconds: dict[str, list[float]], first_box: list[float], num_frames: int, fps: float
) -> np.ndarray:
    """Per-frame xyxy boxes [num_frames, 4] from per-second boxes, for the GOT-10k protocol.

    Frame i sits at i / fps seconds; boxes are linearly interpolated between the predicted seconds,
    with the frame-0 box (the prompt's) at second 0, and held after the last predicted second. The
    OneThinker script only scores seconds; this interpolation is our choice, stated in metrics.json.
    """
    known = {0.0: first_box}
    for key, box in seconds.items():
        try:
            t = float(key)
        except ValueError:
            continue
        if math.isfinite(t) and t > 0:
            known[t] = box
    times = np.array(sorted(known))
    values = np.array([known[t] for t in times], dtype=np.float64)
    at = np.arange(num_frames, dtype=np.float64) / fps
    return np.stack([np.interp(at, times, values[:, j]) for j in range(4)], axis=1)


@dataclass
class Row:
    """What scoring needs of one prediction and its evaluation record."""

    problem_type: str
    data_type: str
    response: str
    solution: str
    media_size: tuple[int, int] | None = None  # original (width, height)
    fps: float | None = None
    frame_boxes: list[list[float]] | None = None  # per-frame ground truth, xywh pixels (GOT-10k)
    frame_absent: list[int] | None = None
    pred_masks: np.ndarray | None = None  # [H, W] or [T, H, W] bool, segmentation only
    gt_masks: np.ndarray | None = None
    mask_ok: bool = True


def _f64(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _gt(value: Any, field: str) -> Any:
    if value is None:
        raise ValueError(f"the solution has no valid {field!r}")
    return value


class BenchmarkScores:
    """The metrics of one benchmark, by task; ``update(row)`` then ``compute()``.

    Args:
        lenient_json: also accept code fences, trailing commas and single quotes in answers
            (an evaluation-only aid; the released rewards are strict).
        reward_variant: QA accuracy semantics, ``released`` or ``paper``.
    """

    def __init__(self, lenient_json: bool = False, reward_variant: str = "released"):
        self.lenient_json, self.reward_variant = lenient_json, reward_variant
        self.metrics: dict[str, dict[str, Metric]] = {}

    @staticmethod
    def _factories(row: Row) -> dict[str, Any]:
        pt, dt = row.problem_type, row.data_type
        if pt in QA_TYPES:
            return {"accuracy": MeanMetric}
        if pt == "temporal grounding":
            return {"tIoU": TemporalGroundingRecall}
        if pt == "spatial grounding":
            return {"box": BoxGroundingAccuracy}
        if pt == "spatial-temporal grounding":
            return {"tIoU": lambda: TemporalGroundingRecall((0.5,)), "sIoU": lambda: IoURecall((0.5,))}
        if pt == "tracking":
            factory: dict[str, Any] = {
                "onethinker": lambda: AverageOverlap("xyxy", "onethinker", (0.3, 0.5, 0.7))
            }
            if row.frame_boxes is not None:
                factory["got10k"] = lambda: AverageOverlap("xyxy", "got10k", (0.5, 0.75))
            return factory
        if pt == "segmentation":
            return {"mask": CumulativeIoU} if dt == "image" else {"mask": JAndF}
        raise ValueError(f"no benchmark scoring for problem_type {pt!r}")

    def declare(self, row: Row) -> dict[str, Metric]:
        """Create the metrics of a row's task (every rank declares every task, so syncs line up)."""
        name = task_key(row.problem_type, row.data_type, "benchmark")
        factory = self._factories(row)
        if name not in self.metrics:
            self.metrics[name] = {k: make() for k, make in factory.items()} | {
                "samples": SumMetric(),
                "unparseable": SumMetric(),
            }
        elif set(factory) - set(self.metrics[name]):
            raise ValueError(f"{name}: per-frame ground truth must be given for all tracking records or none")
        return self.metrics[name]

    def all_metrics(self) -> list[Metric]:
        return [m for task in self.metrics.values() for m in task.values()]

    def update(self, row: Row) -> None:
        """Score one prediction."""
        m = self.declare(row)
        pt, dt = row.problem_type, row.data_type
        gt_obj = (
            None if pt in QA_TYPES or pt == "segmentation" else load_json(strip_ground_truth(row.solution))
        )
        obj = None if pt in QA_TYPES or pt == "segmentation" else answer_json(row.response, self.lenient_json)
        if pt in QA_TYPES:
            m["accuracy"].update(
                score(row.response, row.solution, pt, dt, variant=self.reward_variant).accuracy
            )
            parsed = True
        elif pt == "temporal grounding":
            pred = span_of(obj)
            m["tIoU"].update(_f64([pred or [NAN, NAN]]), _f64([_gt(span_of(gt_obj), "time")]))
            parsed = pred is not None
        elif pt == "spatial grounding":
            pred = box_of(obj)
            m["box"].update(_f64([pred or [NAN] * 4]), _f64([_gt(box_of(gt_obj), "boxes")]))
            parsed = pred is not None
        elif pt == "spatial-temporal grounding":
            pred = span_of(obj)
            m["tIoU"].update(_f64([pred or [NAN, NAN]]), _f64([_gt(span_of(gt_obj), "time")]))
            m["sIoU"].update(_f64([shared_seconds_iou(second_boxes(obj), second_boxes(gt_obj))]))
            parsed = pred is not None and bool(second_boxes(obj))
        elif pt == "tracking":
            parsed = self._tracking(m, row, second_boxes(obj), second_boxes(gt_obj))
        else:  # segmentation
            m["mask"].update(torch.as_tensor(row.pred_masks), torch.as_tensor(row.gt_masks))
            parsed = row.mask_ok
        m["samples"].update(1.0)
        m["unparseable"].update(0.0 if parsed else 1.0)

    @staticmethod
    def _tracking(
        m: dict[str, Metric], row: Row, pred: dict[str, list[float]], gt: dict[str, list[float]]
    ) -> bool:
        if row.media_size is None:
            raise ValueError("tracking needs the video's size to convert boxes to pixels")
        if not gt:
            raise ValueError('the tracking solution holds no valid {"boxes": {second: box}}')
        w, h = row.media_size
        keys = list(gt)
        pred_px = [scale_box(pred[k], w, h) if k in pred else [NAN] * 4 for k in keys]
        gt_px = [scale_box(gt[k], w, h) for k in keys]
        m["onethinker"].update(
            torch.tensor(pred_px, dtype=torch.float64), torch.tensor(gt_px, dtype=torch.float64)
        )
        if row.frame_boxes is not None:
            target = torch.tensor(row.frame_boxes, dtype=torch.float64)
            target[:, 2:] += target[:, :2]  # xywh -> xyxy
            scaled = {k: scale_box(v, w, h) for k, v in pred.items()}
            frames = frame_boxes_from_seconds(scaled, target[0].tolist(), len(target), row.fps or 1.0)
            if not pred:  # no answer: every frame scores 0, not the prompt's box held still
                frames[:] = NAN
            visible = None if row.frame_absent is None else torch.tensor([not a for a in row.frame_absent])
            m["got10k"].update(torch.from_numpy(frames), target, visible=visible, image_size=(w, h))
        return bool(pred)

    def compute(self) -> dict[str, dict[str, float]]:
        """Figures per task: ``{task: {metric: value}}`` (also ``samples`` and ``unparseable``)."""
        out: dict[str, dict[str, float]] = {}
        for name, metrics in sorted(self.metrics.items()):
            figures: dict[str, float] = {}
            for key, metric in metrics.items():
                value = metric.compute()
                if isinstance(value, dict):
                    prefix = "" if key in ("box", "mask", "onethinker") else f"{key}/"
                    if key == "got10k":
                        prefix = "got10k/"
                    figures.update({f"{prefix}{k}": float(v) for k, v in value.items()})
                elif key in ("samples", "unparseable"):
                    figures[key] = int(round(float(value)))
                else:
                    figures[key] = float(value)
            out[name] = figures
        return out
