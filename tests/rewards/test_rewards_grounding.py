"""Hand-computed IoU, tIoU, spatio-temporal grounding, tracking and segmentation cases."""

from __future__ import annotations

import json
import math

import pytest

from rewards.grounding import (
    box_iou,
    spatial_grounding_accuracy,
    spatial_temporal_accuracy,
    temporal_grounding_accuracy,
    temporal_iou,
    tracking_accuracy,
)
from rewards.segmentation import point_similarity, segmentation_image_accuracy, segmentation_video_accuracy

J = json.dumps


@pytest.mark.parametrize(
    "pred,gt,iou",
    [
        ([0, 2], [3, 5], 0.0),  # disjoint
        ([0, 2], [2, 5], 0.0),  # touching
        ([2, 4], [0, 10], 0.2),  # nested: 2 / 10
        ([0, 6], [4, 10], 0.2),  # overlap 2, hull 10
        ([8, 2], [0, 10], 0.0),  # swapped
        ([3, 3], [0, 10], 0.0),  # zero length
        (["2", "4"], [0, 10], 0.2),  # strings that float() accepts
        ([float("nan"), 4], [0, 10], 0.0),
        ([-math.inf, 10], [0, 10], 0.0),
        ([0, 1e308], [0, 10], 10 / 1e308),
        ([1, 2, 3], [0, 10], 0.0),
        ("1-2", [0, 10], 0.0),
    ],
)
def test_temporal_iou(pred, gt, iou) -> None:
    assert temporal_iou(pred, gt) == pytest.approx(iou, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "pred,gt,iou",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 5, 15, 15], 25 / 175),
        ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),  # nested
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edge
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # swapped corners: empty box
        ([-10, -10, 10, 10], [0, 0, 10, 10], 100 / 400),  # negative coordinates are still arithmetic
        (["0", "0", "10", "10"], [0, 0, 10, 10], 1.0),
        ([0, 0, math.inf, 10], [0, 0, 10, 10], 0.0),
        ([0, 0, 1e200, 1e200], [0, 0, 10, 10], 0.0),
        ([0, 0, 10], [0, 0, 10, 10], 0.0),
    ],
)
def test_box_iou(pred, gt, iou) -> None:
    assert box_iou(pred, gt) == pytest.approx(iou, rel=1e-12, abs=1e-300)


def test_temporal_and_spatial_grounding_json() -> None:
    assert temporal_grounding_accuracy('{"time": [2, 4]}', '{"time": [0, 10]}') == pytest.approx(0.2)
    assert temporal_grounding_accuracy("{'time': [2, 4]}", '{"time": [0, 10]}') == 0.0  # strict JSON
    assert temporal_grounding_accuracy('{"time": [2, 4]', '{"time": [0, 10]}') == 0.0  # unclosed
    assert spatial_grounding_accuracy(
        '{"boxes": [0, 0, 10, 10]}', '{"boxes": [5, 5, 15, 15]}'
    ) == pytest.approx(1 / 7)
    assert spatial_grounding_accuracy('{"boxes": [[0, 0, 10, 10]]}', '{"boxes": [0, 0, 10, 10]}') == 0.0


def test_spatial_temporal_grounding() -> None:
    gt = J({"time": [0, 4], "boxes": {"1": [0, 0, 10, 10], "2": [0, 0, 10, 10], "3": [0, 0, 10, 10]}})
    # tIoU [2, 4] vs [0, 4] = 0.5; seconds in both: "1" (IoU 1) and "2" (IoU 25/175); "9" ignored
    pred = J({"time": [2, 4], "boxes": {"1": [0, 0, 10, 10], "2": [5, 5, 15, 15], "9": [0, 0, 1, 1]}})
    miou = (1 + 25 / 175) / 2
    assert spatial_temporal_accuracy(pred, gt) == pytest.approx(0.5 * 0.5 + 0.5 * miou)
    assert spatial_temporal_accuracy(pred, gt, "paper") == pytest.approx(0.5 + miou)
    # second keys compare as strings: "1.0" is not "1"
    assert spatial_temporal_accuracy(J({"time": [0, 4], "boxes": {"1.0": [0, 0, 10, 10]}}), gt) == 0.5
    assert spatial_temporal_accuracy(J({"boxes": {"1": [0, 0, 10, 10]}}), gt) == 0.5  # no time: tIoU 0


def test_tracking() -> None:
    gt = J({"boxes": {"1": [0, 0, 10, 10], "2": [0, 0, 10, 10], "3": [0, 0, 10, 10], "4": [0, 0, 10, 10]}})
    pred = J({"boxes": {"1": [0, 0, 10, 10], "2": [5, 5, 15, 15], "3": "bad", "7": [0, 0, 10, 10]}})
    assert tracking_accuracy(pred, gt) == pytest.approx((1 + 25 / 175 + 0 + 0) / 4)
    assert tracking_accuracy(J({"boxes": [0, 0, 10, 10]}), gt) == 0.0
    assert tracking_accuracy(J({"boxes": {}}), gt) == 0.0


GT_PTS = [[100, 100], [500, 500], [900, 100]]
NEG_PTS = [[100, 900], [500, 800], [900, 900]]


def _seg(box, pos, neg, **extra) -> str:
    return J({"boxes": box, "positive_points": pos, "negative_points": neg, **extra})


def test_point_matching_uses_best_permutation() -> None:
    shifted = [[x + 30, y + 40] for x, y in GT_PTS]  # each point 50 away
    assert point_similarity(GT_PTS[::-1], GT_PTS) == 1.0
    assert point_similarity(shifted[::-1], GT_PTS) == pytest.approx(math.exp(-(50**2) / (2 * 50**2)))
    # one point 150 away, two exact: mean distance 50 under the identity matching
    far = [[100, 250], [500, 500], [900, 100]]
    assert point_similarity(far, GT_PTS) == pytest.approx(math.exp(-0.5))
    assert point_similarity([[1e200, 0]] * 3, GT_PTS) == 0.0  # the released code raises here


def test_segmentation_image() -> None:
    gt = _seg([0, 0, 100, 100], GT_PTS, NEG_PTS)
    shifted = [[x + 30, y + 40] for x, y in NEG_PTS]
    pred = _seg([0, 0, 100, 50], GT_PTS[::-1], shifted)
    assert segmentation_image_accuracy(pred, gt) == pytest.approx(0.5 * 0.5 + 0.25 + 0.25 * math.exp(-0.5))
    # invalid box zeroes only the IoU term
    assert segmentation_image_accuracy(_seg("none", GT_PTS, NEG_PTS), gt) == pytest.approx(0.5)
    # wrong point count: accuracy 0
    assert segmentation_image_accuracy(_seg([0, 0, 100, 100], GT_PTS[:2], NEG_PTS), gt) == 0.0
    assert segmentation_image_accuracy(_seg([0, 0, 100, 100], GT_PTS + [[1, 1]], NEG_PTS), gt) == 0.0


def test_segmentation_video_time_term() -> None:
    gt = _seg([0, 0, 100, 100], GT_PTS, NEG_PTS, time=5)
    pred = _seg([0, 0, 100, 100], GT_PTS, NEG_PTS, time=3)
    assert segmentation_video_accuracy(pred, gt) == pytest.approx(0.3 + 0.3 * math.exp(-1) + 0.4)
    assert segmentation_video_accuracy(pred, gt, "paper") == pytest.approx(0.3 + 0.3 * math.exp(-2) + 0.4)
    assert segmentation_video_accuracy(_seg([0, 0, 100, 100], GT_PTS, NEG_PTS, time="3"), gt) == 0.0
    assert segmentation_video_accuracy(_seg([0, 0, 100, 100], GT_PTS, NEG_PTS), gt) == 0.0
    nan_time = _seg([0, 0, 100, 100], GT_PTS, NEG_PTS, time=math.nan)  # json.dumps writes NaN
    assert '"time": NaN' in nan_time
    assert segmentation_video_accuracy(nan_time, gt) == 0.0  # released: NaN
    inf_time = _seg([0, 0, 100, 100], GT_PTS, NEG_PTS, time=math.inf)
    assert segmentation_video_accuracy(inf_time, gt) == pytest.approx(0.7)  # time term exp(−∞) = 0
