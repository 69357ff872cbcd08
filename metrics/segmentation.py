"""Mask metrics: cIoU/gIoU (RefCOCO family) and J&F (DAVIS, MeViS, ReVOS)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from metrics.boundary import boundary_radius, f_from_counts, frame_counts
from metrics.masks import as_bool_masks, check_mask_pair, pair_counts

_F64 = torch.float64


def region_similarity(inter: Tensor, union: Tensor) -> Tensor:
    """Mask IoU (float64) from pixel counts; both masks empty (union 0) gives 1."""
    j = inter.double() / union.double().clamp(min=1)
    return torch.where(union == 0, torch.ones_like(j), j)


def davis_statistics(values: Tensor) -> Tensor:
    """DAVIS `db_statistics` of per-frame values [n]: float64 [mean, recall (> 0.5), decay].

    Decay compares the first and last of four overlapping bins, with bin edges
    round(linspace(1, n, 5) + 1e-10) - 1 as in davis2017-evaluation. (The official code casts the
    edges to uint8, which wraps for n > 256; DAVIS has no such sequence, and we keep exact ints.)
    """
    n = values.shape[0]
    ids = [round(1 + k * ((n - 1) / 4) + 1e-10) - 1 for k in range(5)]
    first = values[ids[0] : ids[1] + 1].mean()
    last = values[ids[3] : ids[4] + 1].mean()
    return torch.stack([values.mean(), (values > 0.5).double().mean(), first - last])


class CumulativeIoU(Metric):
    """cIoU (sum of intersections / sum of unions) and gIoU (mean per-sample IoU) of binary masks.

    `update(preds, target)` takes masks [H, W] or [N, H, W], bool or 0/1. A sample whose masks are
    both empty has IoU 1. `compute()` returns {"cIoU", "gIoU"}; cIoU is 0 when every union is empty.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    intersection: Tensor
    union: Tensor
    iou_sum: Tensor
    num_samples: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("intersection", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("union", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add masks [H, W] or [N, H, W]."""
        preds, target = check_mask_pair(preds, target, (2, 3))
        if target.ndim == 2:
            preds, target = preds[None], target[None]
        if target.shape[0] == 0:
            return
        inter, union = pair_counts(preds, target)
        dev = self.iou_sum.device
        self.intersection += inter.sum().to(dev)
        self.union += union.sum().to(dev)
        self.iou_sum += region_similarity(inter, union).sum().to(dev)
        self.num_samples += target.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """Return {"cIoU", "gIoU"} as float64 scalars."""
        ciou = self.intersection.double() / self.union.double().clamp(min=1)
        giou = self.iou_sum / self.num_samples.double()
        return {"cIoU": ciou, "gIoU": giou}


class JAndF(Metric):
    """Region J and DAVIS boundary F per frame, averaged per sequence, then over sequences.

    Each `update(preds, target)` takes ONE object (DAVIS) or expression (MeViS, ReVOS: the target is
    the union of its objects) as masks [T, H, W]. A sequence scores the mean J and mean F over all
    its frames. `compute()` returns {"J", "F", "J&F"} with J&F = (J + F) / 2. Optional `void`
    pixels are cleared in both masks first, as davis2017-evaluation does.

    With `davis_statistics=True` it also returns the DAVIS semi-supervised figures over frames
    1..T-2 (first and last dropped): "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
    "F-Decay" and "J&F-Mean", each averaged over sequences (objects); sequences need T >= 3.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    j_sum: Tensor
    f_sum: Tensor
    num_sequences: Tensor
    davis_sum: Tensor

    _DAVIS_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

    def __init__(self, bound_th: float = 0.008, davis_statistics: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        boundary_radius(1, 1, bound_th)  # validates bound_th
        self.bound_th = bound_th
        self.davis_statistics = davis_statistics
        self.add_state("j_sum", torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("f_sum", torch.tensor(0.0, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("num_sequences", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("davis_sum", torch.zeros(6, dtype=_F64), dist_reduce_fx="sum")

    def per_frame(self, preds: Tensor, target: Tensor, void: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-frame J and F (float64 [T] each) of one sequence [T, H, W]; no state change.

        `void` [T, H, W] marks pixels to ignore (DAVIS label 255): as in davis2017-evaluation, both
        masks are cleared there before J and the boundaries are computed.
        """
        preds, target = check_mask_pair(preds, target, (3,))
        if target.shape[0] == 0:
            raise ValueError("`target` must hold at least one frame, got shape (0, H, W)")
        if void is not None:
            void = as_bool_masks(void, "void").to(target.device)
            if void.shape != target.shape:
                raise ValueError(
                    f"`void` must have the shape of `target` {tuple(target.shape)}, got {tuple(void.shape)}"
                )
            preds, target = preds & ~void, target & ~void
        radius = boundary_radius(target.shape[-2], target.shape[-1], self.bound_th)
        c = frame_counts(preds, target, radius)
        return region_similarity(c["inter"], c["union"]), f_from_counts(
            c["n_fg"], c["n_gt"], c["fg_match"], c["gt_match"]
        )

    def update(self, preds: Tensor, target: Tensor, void: Tensor | None = None) -> None:
        """Add one sequence of masks [T, H, W] (bool or 0/1), with optional `void` pixels [T, H, W]."""
        if self.davis_statistics and isinstance(target, Tensor) and target.ndim == 3 and target.shape[0] < 3:
            raise ValueError(
                f"`target` needs at least 3 frames for the DAVIS statistics (frames 1..T-2), got {target.shape[0]}"
            )
        j, f = self.per_frame(preds, target, void)
        dev = self.j_sum.device
        self.j_sum += j.mean().to(dev)
        self.f_sum += f.mean().to(dev)
        self.num_sequences += 1
        if self.davis_statistics:
            stats = torch.cat([davis_statistics(j[1:-1]), davis_statistics(f[1:-1])])
            self.davis_sum += stats.to(dev)

    def compute(self) -> dict[str, Tensor]:
        """Return {"J", "F", "J&F"} (plus the DAVIS keys when enabled) as float64 scalars."""
        n = self.num_sequences.double()
        j, f = self.j_sum / n, self.f_sum / n
        out = {"J": j, "F": f, "J&F": (j + f) / 2}
        if self.davis_statistics:
            means = self.davis_sum / n
            out.update(dict(zip(self._DAVIS_KEYS, means.unbind())))
            out["J&F-Mean"] = (means[0] + means[3]) / 2
        return out
