"""DAVIS boundary F-measure, vectorised in torch.

Hand-written reproduction of `f_measure` / `_seg2bmap` from davis2017-evaluation
(davisvideochallenge/davis2017-evaluation, davis2017/metrics.py). We cannot import it (it needs
cv2 and skimage and runs one frame at a time in numpy), so its exact semantics are rebuilt here:

- `_seg2bmap`: pixel (y, x) is a boundary pixel when it differs from its right, lower or lower-right
  neighbour, comparing only neighbours that lie inside the image. Boundaries are therefore one
  pixel thick, offset half a pixel toward the origin, and an object edge on the image border is
  never a boundary.
- tolerance: `bound_th` pixels when `bound_th >= 1`, else ceil(bound_th * sqrt(H^2 + W^2)).
- `cv2.dilate` with `skimage.morphology.disk(r)` (dx^2 + dy^2 <= r^2); outside the image counts
  as background.
- precision = |fg_b & dilate(gt_b)| / |fg_b|, recall = |gt_b & dilate(fg_b)| / |gt_b|; both
  boundaries empty gives F = 1, exactly one empty gives F = 0, and P + R = 0 gives F = 0.

All masks are bit-packed (see `masks.py`), so every op below processes eight frames at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metrics.masks import count_bits, pack_bits

# Frames handled per block: a small working set stays in cache and bounds memory for long videos.
_BLOCK_FRAMES = 16


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Disk radius in pixels: `bound_th` if >= 1, else ceil(bound_th * image diagonal)."""
    if not math.isfinite(bound_th) or bound_th <= 0:
        raise ValueError(f"`bound_th` must be a positive finite number, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"`bound_th` >= 1 is a pixel radius and must be an integer, got {bound_th}")
        return int(bound_th)
    # np.linalg.norm((H, W)) is sqrt(H*H + W*W) in float64; math.sqrt rounds the same way.
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def disk(radius: int) -> Tensor:
    """Boolean disk footprint [2r+1, 2r+1] with dx^2 + dy^2 <= r^2 (skimage's `disk`)."""
    d = torch.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius * radius


def seg2bmap(seg: Tensor) -> Tensor:
    """One-pixel boundary map of bool or bit-packed uint8 masks [..., H, W] (DAVIS `_seg2bmap`)."""
    b = torch.zeros_like(seg)
    torch.bitwise_xor(seg[..., :, :-1], seg[..., :, 1:], out=b[..., :, :-1])  # right neighbour
    b[..., :-1, :] |= seg[..., :-1, :] ^ seg[..., 1:, :]  # lower neighbour
    b[..., :-1, :-1] |= seg[..., :-1, :-1] ^ seg[..., 1:, 1:]  # lower-right neighbour
    return b


def _hdilate(x: Tensor, step: int) -> Tensor:
    """OR of x and x shifted left and right by `step` columns; zeros enter at the borders."""
    y = torch.empty_like(x)
    torch.bitwise_or(x[..., step:], x[..., :-step], out=y[..., step:])
    y[..., :step] = x[..., :step]
    y[..., :-step] |= x[..., step:]
    return y


def dilate_disk(x: Tensor, radius: int) -> Tensor:
    """Binary dilation of bool or bit-packed uint8 maps [..., H, W] by `disk(radius)`.

    The disk is the union over rows dy of horizontal segments of half-width isqrt(r^2 - dy^2).
    Horizontal dilations for the few distinct half-widths are built incrementally (each step at
    most doubles the reach), then each row dy ORs in the matching one shifted vertically.
    """
    if radius <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    half = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    rows: dict[int, Tensor] = {0: x}
    cur, reach = x, 0
    for target in sorted(set(half)):
        goal = min(target, w - 1)  # reaching past the image width adds nothing
        while reach < goal:
            step = min(goal - reach, 2 * reach + 1)
            cur = _hdilate(cur, step)
            reach += step
        rows[target] = cur
    out = rows[half[0]]
    if out is x or any(rows[half[dy]] is out for dy in range(1, radius + 1)):
        out = out.clone()  # accumulate in place only into a tensor nobody else reads
    for dy in range(1, min(radius, h - 1) + 1):
        seg = rows[half[dy]]
        out[..., dy:, :] |= seg[..., :-dy, :]
        out[..., :-dy, :] |= seg[..., dy:, :]
    return out


def frame_counts(preds: Tensor, target: Tensor, radius: int) -> dict[str, Tensor]:
    """Per-frame pixel counts of bool [T, H, W] pairs, all int64 [T].

    Keys: "inter" and "union" of the masks; "n_fg" and "n_gt", the boundary sizes; "fg_match"
    (|fg_b & dilate(gt_b)|) and "gt_match" (|gt_b & dilate(fg_b)|).
    """
    t, h, w = preds.shape
    parts: list[list[Tensor]] = [[], [], []]
    for start in range(0, t, _BLOCK_FRAMES):
        n = min(_BLOCK_FRAMES, t - start)
        groups = (n + 7) // 8
        # Prediction and target are stacked on dim 0, so each op below serves both.
        x = torch.zeros(2, groups, h, w, dtype=torch.uint8, device=preds.device)
        pack_bits(preds[start : start + n], out=x[0])
        pack_bits(target[start : start + n], out=x[1])
        # Pixels outside the bounding box of both masks, grown by one pixel, are background in
        # both and are no boundary pixels (a boundary pixel differs from a right, lower or
        # lower-right neighbour, all of which lie in the grown box). All counts come from that box.
        union = x[0] | x[1]
        rows = union.amax(dim=(0, 2)).nonzero()
        if rows.numel() == 0:  # both masks empty in every frame of the block
            zeros = torch.zeros(2, n, dtype=torch.int64, device=preds.device)
            for acc in parts:
                acc.append(zeros)
            continue
        cols = union.amax(dim=(0, 1)).nonzero()
        y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
        x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
        x = x[..., y0:y1, x0:x1]
        region = torch.stack([x[0] & x[1], union[..., y0:y1, x0:x1]])
        b = seg2bmap(x)
        d = dilate_disk(b, radius)
        d[0] &= b[1]  # gt boundary pixels near the fg boundary
        d[1] &= b[0]  # fg boundary pixels near the gt boundary
        for acc, m in zip(parts, (region, b, d)):
            acc.append(count_bits(m.reshape(2 * groups, y1 - y0, x1 - x0)).view(2, -1)[:, :n])
    region, bound, match = (torch.cat(c, 1) for c in parts)
    return {
        "inter": region[0],
        "union": region[1],
        "n_fg": bound[0],
        "n_gt": bound[1],
        "fg_match": match[1],
        "gt_match": match[0],
    }


def f_from_counts(n_fg: Tensor, n_gt: Tensor, fg_match: Tensor, gt_match: Tensor) -> Tensor:
    """Boundary F-measure (float64) from the counts of `frame_counts`, with DAVIS's empty rules."""
    n_fg, n_gt = n_fg.double(), n_gt.double()
    precision = fg_match.double() / n_fg.clamp(min=1)
    recall = gt_match.double() / n_gt.clamp(min=1)
    # Exactly one boundary empty: the matched counts are 0, so P + R = 0 and F = 0 as in DAVIS.
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(denom))
    return torch.where((n_fg == 0) & (n_gt == 0), torch.ones_like(f), f)


def boundary_f_measure(preds: Tensor, target: Tensor, bound_th: float = 0.008) -> Tensor:
    """Per-frame DAVIS boundary F-measure (float64 [T]) of bool masks [T, H, W]."""
    c = frame_counts(preds, target, boundary_radius(preds.shape[-2], preds.shape[-1], bound_th))
    return f_from_counts(c["n_fg"], c["n_gt"], c["fg_match"], c["gt_match"])
