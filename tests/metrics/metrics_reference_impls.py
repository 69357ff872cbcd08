"""Independent numpy/cv2 references for the metric tests and the benchmark.

The DAVIS functions follow the davis2017-evaluation algorithm literally, one frame at a time, with
`cv2.dilate` and `skimage.morphology.disk` as the official code uses them. They are written here
(not imported) because davis2017-evaluation is not on PyPI.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.morphology import disk


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS `_seg2bmap` for same-size output: shifted copies, XOR, then the last row/column fix-up."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def f_measure(fg: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS boundary F of one frame (2-D masks)."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_b = seg2bmap(fg)
    gt_b = seg2bmap(gt)
    k = disk(bound_pix).astype(np.uint8)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), k)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), k)
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_b * gt_dil) / float(n_fg)
        recall = np.sum(gt_b * fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def region_j(fg: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """DAVIS `db_eval_iou` over [T, H, W]: per-frame IoU, 1 where the union is empty."""
    fg, gt = fg.astype(bool), gt.astype(bool)
    inter = np.sum(fg & gt, axis=(-2, -1))
    union = np.sum(fg | gt, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[np.isclose(union, 0)] = 1
    return j


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """DAVIS mean, recall and decay of per-frame values."""
    m = np.nanmean(values)
    o = np.nanmean(values > 0.5)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return float(m), float(o), float(np.nanmean(bins[0]) - np.nanmean(bins[3]))


def sequence_jf(fg: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of one sequence [T, H, W], the reference way (a loop over frames for F)."""
    j = region_j(fg, gt)
    f = np.array([f_measure(fg[t], gt[t], bound_th) for t in range(fg.shape[0])])
    return j, f


def ciou_loop(preds: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """cIoU and gIoU with a plain loop over samples."""
    inter_sum = union_sum = 0
    ious = []
    for p, t in zip(preds.astype(bool), target.astype(bool)):
        inter = int(np.logical_and(p, t).sum())
        union = int(np.logical_or(p, t).sum())
        inter_sum += inter
        union_sum += union
        ious.append(1.0 if union == 0 else inter / union)
    return (inter_sum / union_sum if union_sum else 0.0), float(np.mean(ious))


def onethinker_box_iou(a: list[float], b: list[float]) -> float:
    """Box IoU [x1, y1, x2, y2] as the OneThinker script defines it, in plain Python."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (
        max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    )
    return inter / union if union > 1e-12 else 0.0


def span_iou(a: list[float], b: list[float]) -> float:
    """Temporal IoU with the hull as the union, in plain Python."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 1e-12 else 0.0


def blob_masks(rng: np.random.Generator, t: int, h: int, w: int, n_blobs: int = 3) -> np.ndarray:
    """Smooth random masks [T, H, W]: unions of random ellipses, drifting over time."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((t, h, w), bool)
    params = [
        (
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(2, w / 3 + 2),
            rng.uniform(2, h / 3 + 2),
            rng.uniform(-2, 2),
            rng.uniform(-2, 2),
        )
        for _ in range(n_blobs)
    ]
    for i in range(t):
        for cx, cy, ax, ay, vx, vy in params:
            out[i] |= ((xx - cx - vx * i) / ax) ** 2 + ((yy - cy - vy * i) / ay) ** 2 <= 1
    return out


def diagonal(h: int, w: int) -> float:
    """Image diagonal as numpy computes it for the DAVIS tolerance."""
    return math.sqrt(h * h + w * w)
