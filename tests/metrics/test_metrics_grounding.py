"""Temporal grounding recall and referring-box accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_reference_impls import onethinker_box_iou, span_iou

from metrics import BoxGroundingAccuracy, TemporalGroundingRecall

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

NAN = float("nan")


def test_temporal_hand_cases() -> None:
    m = TemporalGroundingRecall()
    preds = torch.tensor([[0.0, 10.0], [0.0, 10.0], [5.0, 3.0], [4.0, 4.0], [NAN, 1.0], [2.0, 9.0]])
    target = torch.tensor([[5.0, 15.0], [0.0, 5.0], [0.0, 10.0], [0.0, 10.0], [0.0, 1.0], [2.0, 9.0]])
    # 5/15 (hull union), exactly 0.5, swapped -> 0, zero-length -> 0, NaN -> 0, exact match 1.
    m.update(preds, target)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["mIoU"] == pytest.approx((1 / 3 + 0.5 + 1.0) / 6)
    assert out["R@0.3"] == pytest.approx(3 / 6)
    assert out["R@0.5"] == pytest.approx(2 / 6)  # 0.5 >= 0.5 counts
    assert out["R@0.7"] == pytest.approx(1 / 6)
    assert m.nan_predictions().item() == 1


def test_temporal_hull_union_for_disjoint_spans() -> None:
    m = TemporalGroundingRecall(thresholds=(0.5,))
    m.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 4.0]]))
    assert m.compute()["mIoU"].item() == 0.0


def test_temporal_matches_python_reference() -> None:
    rng = np.random.default_rng(0)
    target = np.sort(rng.uniform(0, 60, (200, 2)), 1)
    preds = target + rng.normal(0, 6, (200, 2))
    m = TemporalGroundingRecall()
    m.update(torch.from_numpy(preds[:120]), torch.from_numpy(target[:120]))
    m.update(torch.from_numpy(preds[120:]), torch.from_numpy(target[120:]))
    ious = np.array([span_iou(list(p), list(t)) for p, t in zip(preds, target)])
    out = m.compute()
    assert out["mIoU"].item() == pytest.approx(ious.mean(), abs=1e-12)
    for t in (0.3, 0.5, 0.7):
        assert out[f"R@{t}"].item() == pytest.approx(np.mean(ious >= t), abs=1e-12)


def test_temporal_bad_input() -> None:
    m = TemporalGroundingRecall()
    with pytest.raises(ValueError, match="`preds`"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`target`.*start <= end"):
        m.update(torch.zeros(1, 2), torch.tensor([[3.0, 1.0]]))
    with pytest.raises(ValueError, match="`target`.*non-finite"):
        m.update(torch.zeros(1, 2), torch.tensor([[0.0, NAN]]))
    with pytest.raises(ValueError, match="`preds`.*infinite"):
        m.update(torch.tensor([[0.0, float("inf")]]), torch.tensor([[0.0, 1.0]]))


def test_box_hand_cases() -> None:
    m = BoxGroundingAccuracy(thresholds=(0.5, 0.75))
    preds = torch.tensor(
        [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 2.0, 4.0], [4, 4, 2, 2], [NAN, 0, 1, 1], [5, 5, 6, 6]]
    )
    target = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 4 + [[0.0, 0.0, 4.0, 4.0]])
    # 1, exactly 0.5, inverted box -> 0, NaN -> 0, disjoint -> 0
    m.update(preds, target)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out == {
        "mIoU": pytest.approx(1.5 / 5),
        "Acc@0.5": pytest.approx(2 / 5),
        "Acc@0.75": pytest.approx(1 / 5),
    }
    assert m.nan_predictions().item() == 1


def test_box_xywh_and_zero_area() -> None:
    m = BoxGroundingAccuracy(box_format="xywh")
    m.update(
        torch.tensor([[0.0, 0.0, 2.0, 4.0], [1, 1, 0, 0]]), torch.tensor([[0.0, 0.0, 4.0, 4.0], [1, 1, 0, 0]])
    )
    assert m.compute()["mIoU"].item() == 0.25  # (0.5 + 0) / 2: two zero-area boxes score 0


def test_box_matches_python_reference() -> None:
    rng = np.random.default_rng(2)
    target = np.sort(rng.uniform(0, 500, (300, 2, 2)), 1).reshape(300, 4)[:, [0, 2, 1, 3]]
    preds = target + rng.normal(0, 30, (300, 4))
    m = BoxGroundingAccuracy()
    m.update(torch.from_numpy(preds), torch.from_numpy(target))
    ious = np.array([onethinker_box_iou(list(p), list(t)) for p, t in zip(preds, target)])
    assert m.compute()["mIoU"].item() == pytest.approx(ious.mean(), abs=1e-12)
    assert m.compute()["Acc@0.5"].item() == pytest.approx(np.mean(ious >= 0.5), abs=1e-12)


def test_box_bad_input() -> None:
    m = BoxGroundingAccuracy()
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        m.update(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="box_format"):
        BoxGroundingAccuracy(box_format="yolo")


def test_iou_recall_hand_computed():
    from metrics import IoURecall

    m = IoURecall(thresholds=(0.5,))
    m.update(torch.tensor([0.2, 0.5, float("nan")]))
    m.update(torch.tensor([0.9]))
    out = m.compute()
    # NaN scores 0: mean (0.2 + 0.5 + 0 + 0.9) / 4; IoU >= 0.5 for 0.5 and 0.9.
    assert out["mIoU"].item() == pytest.approx(0.4)
    assert out["R@0.5"].item() == pytest.approx(0.5)
    assert m.nan_predictions().item() == 1
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        m.update(torch.tensor([1.5]))
