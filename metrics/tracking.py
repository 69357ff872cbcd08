"""Single-object tracking: GOT-10k average overlap (AO) and success rates (SR)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from metrics._common import NanPredictionCount, check_thresholds, threshold_key
from metrics.boxes import BOX_FORMATS, check_boxes, got10k_clip, got10k_iou, to_xywh, to_xyxy, xyxy_iou

PROTOCOLS = ("got10k", "onethinker")


class AverageOverlap(NanPredictionCount):
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

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    iou_sum: Tensor
    count: Tensor
    hits: Tensor

    def __init__(
        self,
        box_format: str = "xywh",
        protocol: str = "got10k",
        thresholds: Sequence[float] = (0.5, 0.75),
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if box_format not in BOX_FORMATS:
            raise ValueError(f"`box_format` must be one of {BOX_FORMATS}, got {box_format!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}")
        self.box_format = box_format
        self.protocol = protocol
        self.thresholds = check_thresholds(thresholds)
        self.register_buffer("_thr", torch.tensor(self.thresholds, dtype=torch.float64), persistent=False)
        # got10k: sums over frames; onethinker: sums over videos.
        self.add_state("iou_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(self.thresholds), dtype=torch.int64), dist_reduce_fx="sum")
        self._add_nan_state()

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        visible: Tensor | None = None,
        image_size: tuple[float, float] | None = None,
    ) -> None:
        """Add one sequence: boxes [N, 4], optional `visible` bool [N], optional `image_size` (W, H)."""
        preds, target, nan_rows = check_boxes(preds, target)
        n = target.shape[0]
        keep = self._check_visible(visible, n, target.device)
        if self.protocol == "got10k":
            if n == 0:
                raise ValueError("`target` must hold at least frame 0 for protocol='got10k'")
            keep[0] = False  # `keep` is always a fresh tensor
            both = to_xywh(torch.cat([preds, target]), self.box_format)
            if image_size is not None:
                both = got10k_clip(both, *self._check_image_size(image_size))
            iou = got10k_iou(both[:n], both[n:])
        else:
            if image_size is not None:
                raise ValueError(
                    "`image_size` is only used by protocol='got10k' (the OneThinker script does not clip)"
                )
            iou = xyxy_iou(to_xyxy(preds, self.box_format), to_xyxy(target, self.box_format))
        iou = iou.masked_fill(nan_rows, 0.0)[keep]
        thr = self._thr.to(iou.device)
        dev = self.iou_sum.device
        self.num_nan_preds += (nan_rows & keep).sum().to(dev)
        if self.protocol == "got10k":
            self.iou_sum += iou.sum().to(dev)
            self.count += iou.numel()
            self.hits += (iou[:, None] > thr).sum(0).to(dev)
        else:
            # The script's mean over GT seconds; a video with none scores 0.
            video = iou.mean() if iou.numel() else torch.zeros((), dtype=torch.float64, device=iou.device)
            self.iou_sum += video.to(dev)
            self.count += 1
            self.hits += (video >= thr).long().to(dev)

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
