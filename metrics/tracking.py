"""Single-object tracking: GOT-10k average overlap (AO) and success rates (SR)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from metrics._common import IoUThresholdMetric, threshold_key
from metrics.boxes import BOX_FORMATS, check_boxes, got10k_clip, got10k_iou, to_xywh, to_xyxy, xyxy_iou

PROTOCOLS = ("got10k", "onethinker")


class AverageOverlap(IoUThresholdMetric):
    """AO and success rates of tracked boxes, one sequence per `update`.

    `protocol="got10k"` follows the official toolkit (`ExperimentGOT10k.report`): frame 0 and frames
    with `visible` False are dropped; with `image_size=(W, H)` both boxes are clipped the toolkit's
    way; IoU is `rect_iou` (a zero-area box scores 0); SR@t counts IoU > t (strict); AO and SR pool
    every scored frame of every sequence. Keys: "AO", "SR@t".

    `protocol="onethinker"` follows the authors' eval script: per-second boxes, every given frame
    counts (drop absent seconds with `visible`), IoU as `iou_2d`, a video scores its mean IoU, AO is
    the mean over videos and R@t the share of videos with mean IoU >= t. Keys: "AO", "R@t".

    A NaN prediction row (e.g. a missing second) scores IoU 0; `nan_predictions()` counts the scored
    ones. Target boxes must be finite.
    """

    def __init__(
        self,
        box_format: str = "xywh",
        protocol: str = "got10k",
        thresholds: Sequence[float] = (0.5, 0.75),
        **kwargs: object,
    ) -> None:
        super().__init__(thresholds, **kwargs)  # got10k: sums over frames; onethinker: over videos
        if box_format not in BOX_FORMATS:
            raise ValueError(f"`box_format` must be one of {BOX_FORMATS}, got {box_format!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}")
        self.box_format = box_format
        self.protocol = protocol

    def update(
        self,
        preds: Tensor | Sequence[Tensor],
        target: Tensor | Sequence[Tensor],
        visible: Tensor | Sequence[Tensor | None] | None = None,
        image_size: tuple[float, float] | Sequence[tuple[float, float] | None] | None = None,
    ) -> None:
        """Add one sequence (boxes [N, 4], optional `visible` bool [N], optional `image_size` (W, H)),
        or many: lists of those, scored in one vectorised pass with the same result as one call each."""
        if isinstance(target, Tensor):
            self._update_sequences([preds], [target], [visible], [image_size])
        else:
            self._update_sequences(preds, target, visible, image_size)

    def _update_sequences(
        self,
        preds: Sequence[Tensor],
        target: Sequence[Tensor],
        visible: Sequence[Tensor | None] | None = None,
        image_size: Sequence[tuple[float, float] | None] | None = None,
    ) -> None:
        """Sequences are concatenated and scored together: per-row image bounds for the got10k clip, a
        per-sequence first-frame drop, and per-video means (onethinker) by scatter over sequence ids.
        """
        k = len(target)
        visible = list(visible) if visible is not None else [None] * k
        image_size = list(image_size) if image_size is not None else [None] * k
        if not (len(preds) == k == len(visible) == len(image_size)):
            raise ValueError(
                "`preds`, `target`, `visible` and `image_size` must list the same number of sequences"
            )
        if k == 0:
            return
        lengths = []
        for p, t in zip(preds, target):
            if not (isinstance(p, Tensor) and isinstance(t, Tensor)) or p.shape != t.shape or t.ndim != 2:
                check_boxes(p, t)  # raises its clear error for this sequence
            lengths.append(t.shape[0])
        preds_all, target_all, nan_rows = check_boxes(torch.cat(list(preds)), torch.cat(list(target)))
        device = target_all.device
        keep = torch.cat([self._check_visible(v, n, device) for v, n in zip(visible, lengths)])
        counts = torch.tensor(lengths, device=device)
        seq = torch.repeat_interleave(torch.arange(k, device=device), counts)
        if self.protocol == "got10k":
            if min(lengths) == 0:
                raise ValueError("`target` must hold at least frame 0 for protocol='got10k'")
            starts = torch.cumsum(counts, 0) - counts
            keep[starts] = False
            both = to_xywh(torch.cat([preds_all, target_all]), self.box_format)
            if any(size is not None for size in image_size):
                bounds = [self._check_image_size(s) if s is not None else (1.0, 1.0) for s in image_size]
                wh = torch.tensor(bounds, dtype=torch.float64, device=device)[seq].repeat(2, 1)
                bounded = torch.tensor([s is not None for s in image_size], device=device)[seq].repeat(2)
                both = torch.where(bounded[:, None], got10k_clip(both, wh[:, 0], wh[:, 1]), both)
            n = target_all.shape[0]
            iou = got10k_iou(both[:n], both[n:])
        else:
            if any(size is not None for size in image_size):
                raise ValueError(
                    "`image_size` is only used by protocol='got10k' (the OneThinker script does not clip)"
                )
            iou = xyxy_iou(to_xyxy(preds_all, self.box_format), to_xyxy(target_all, self.box_format))
        iou = iou.masked_fill(nan_rows, 0.0)
        thr = self._thr.to(device)
        dev = self.iou_sum.device
        self.num_nan_preds += (nan_rows & keep).sum().to(dev)
        if self.protocol == "got10k":
            iou = iou[keep]
            self.iou_sum += iou.sum().to(dev)
            self.count += iou.numel()
            self.hits += (iou[:, None] > thr).sum(0).to(dev)
        else:
            # The script's mean over GT seconds per video; a video with none scores 0.
            scored = torch.zeros(k, dtype=torch.float64, device=device).index_add_(0, seq[keep], iou[keep])
            frames = torch.bincount(seq[keep], minlength=k).to(torch.float64)
            video = torch.where(frames > 0, scored / frames.clamp(min=1), torch.zeros_like(scored))
            self.iou_sum += video.sum().to(dev)
            self.count += k
            self.hits += (video[:, None] >= thr).sum(0).to(dev)

    @staticmethod
    def _check_visible(visible: Tensor | None, n: int, device: torch.device) -> Tensor:
        if visible is None:
            return torch.ones(n, dtype=torch.bool, device=device)
        if not isinstance(visible, Tensor) or visible.shape != (n,):
            shape = tuple(visible.shape) if isinstance(visible, Tensor) else type(visible).__name__
            raise ValueError(f"`visible` must be a tensor of shape [{n}], got {shape}")
        return (visible != 0).to(device)

    @staticmethod
    def _check_image_size(image_size: tuple[float, float]) -> tuple[float, float]:
        try:
            w, h = (float(v) for v in image_size)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`image_size` must be (W, H), got {image_size!r}") from err
        if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
            raise ValueError(f"`image_size` must be two positive finite numbers (W, H), got {image_size!r}")
        return w, h

    def compute(self) -> dict[str, Tensor]:
        """Return {"AO", "SR@t"...} (got10k) or {"AO", "R@t"...} (onethinker) as float64 scalars."""
        n = self.count.double()
        prefix = "SR" if self.protocol == "got10k" else "R"
        out = {"AO": self.iou_sum / n}
        for t, h in zip(self.thresholds, self.hits.unbind()):
            out[threshold_key(prefix, t)] = h.double() / n
        return out
