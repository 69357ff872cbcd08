"""Benchmark scoring of prediction rows, against hand-computed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_modules.eval.report import PredictionStore, decode_mask, encode_mask, summary_table
from lightning_modules.eval.scoring import (
    BenchmarkScores,
    Row,
    frame_boxes_from_seconds,
)
from rewards.grounding import shared_seconds_iou


def answer(obj: object) -> str:
    return f"<think>t</think><answer>{json.dumps(obj)}</answer>"


def test_temporal_grounding_miou_and_recall():
    s = BenchmarkScores()
    gt = answer({"time": [0, 10]})
    s.update(Row("temporal grounding", "video", answer({"time": [0, 10]}), gt))  # tIoU 1
    s.update(Row("temporal grounding", "video", answer({"time": [5, 10]}), gt))  # 5 / 10
    s.update(Row("temporal grounding", "video", answer({"time": [8, 12]}), gt))  # 2 / 12 (hull union)
    s.update(Row("temporal grounding", "video", "no json at all", gt))  # unparseable: 0
    out = s.compute()["temporal grounding"]
    assert out["tIoU/mIoU"] == pytest.approx((1 + 0.5 + 2 / 12) / 4)
    assert out["tIoU/R@0.3"] == pytest.approx(2 / 4)
    assert out["tIoU/R@0.5"] == pytest.approx(2 / 4)
    assert out["tIoU/R@0.7"] == pytest.approx(1 / 4)
    assert (out["samples"], out["unparseable"]) == (4, 1)


def test_spatial_grounding_accuracy_at_half():
    s = BenchmarkScores()
    gt = answer({"boxes": [0, 0, 100, 100]})
    s.update(Row("spatial grounding", "image", answer({"boxes": [0, 0, 100, 50]}), gt))  # 0.5
    s.update(Row("spatial grounding", "image", answer({"boxes": [50, 0, 150, 100]}), gt))  # 5000 / 15000
    out = s.compute()["spatial grounding"]
    assert out["mIoU"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert out["Acc@0.5"] == pytest.approx(0.5)


def test_spatio_temporal_siou_over_shared_seconds():
    gt = {"time": [1, 3], "boxes": {"1": [0, 0, 10, 10], "2": [0, 0, 10, 10], "3": [0, 0, 10, 10]}}
    pred = {"time": [2, 3], "boxes": {"2": [0, 0, 10, 5], "3": [0, 0, 10, 10], "7": [0, 0, 1, 1]}}
    # Shared seconds 2 and 3: IoU 0.5 and 1; second 7 is not in the ground truth, second 1 is missing.
    assert shared_seconds_iou(pred["boxes"], gt["boxes"]) == pytest.approx(0.75)
    s = BenchmarkScores()
    s.update(Row("spatial-temporal grounding", "video", answer(pred), answer(gt)))
    s.update(Row("spatial-temporal grounding", "video", answer({"time": [1, 3], "boxes": {}}), answer(gt)))
    out = s.compute()["spatial-temporal grounding"]
    assert out["tIoU/mIoU"] == pytest.approx((0.5 + 1) / 2)
    assert out["tIoU/R@0.5"] == pytest.approx(1.0)
    assert out["sIoU/mIoU"] == pytest.approx(0.75 / 2)
    assert out["sIoU/R@0.5"] == pytest.approx(0.5)
    assert out["unparseable"] == 1  # no boxes at all


def test_tracking_onethinker_protocol_in_pixels():
    gt = {"boxes": {"1": [0, 0, 500, 500], "2": [0, 0, 500, 500]}}
    pred = {"boxes": {"1": [0, 0, 500, 500]}}  # second 2 missing: IoU 0, so the video scores 0.5
    s = BenchmarkScores()
    s.update(Row("tracking", "video", answer(pred), answer(gt), media_size=(640, 360)))
    s.update(Row("tracking", "video", answer(gt), answer(gt), media_size=(640, 360)))
    out = s.compute()["tracking"]
    assert out["AO"] == pytest.approx((0.5 + 1) / 2)
    assert (out["R@0.3"], out["R@0.5"], out["R@0.7"]) == pytest.approx(
        (1.0, 1.0, 0.5)
    )  # share of videos >= t


def test_tracking_got10k_protocol_interpolates_seconds_to_frames():
    # fps 2, W = H = 1000 (0-1000 = pixels). GT moves 10 px right per frame; frame 0 is the prompt.
    frames = [[10.0 * i, 0.0, 100.0, 100.0] for i in range(5)]  # xywh, t = 0, 0.5, 1, 1.5, 2
    per_second = {"1": [20, 0, 120, 100], "2": [40, 0, 140, 100]}
    boxes = frame_boxes_from_seconds(per_second, [0, 0, 100, 100], 5, 2.0)
    assert boxes[:, 0].tolist() == [0, 10, 20, 30, 40]  # halfway frames interpolated
    s = BenchmarkScores()
    pred = {"boxes": {"1": [20, 0, 120, 100], "2": [60, 0, 160, 100]}}  # second 2 is 20 px off
    row = Row("tracking", "video", answer(pred), answer({"boxes": per_second}), media_size=(1000, 1000), fps=2.0,
              frame_boxes=frames)  # fmt: skip
    s.update(row)
    out = s.compute()["tracking"]
    # Frames 1..4 (frame 0 dropped): x offsets 0, 0, 10, 20 on 100-wide boxes.
    ious = [1, 1, 90 / 110, 80 / 120]
    assert out["got10k/AO"] == pytest.approx(sum(ious) / 4)
    assert out["got10k/SR@0.75"] == pytest.approx(3 / 4)
    assert out["AO"] == pytest.approx((1 + 80 / 120) / 2)  # the per-second protocol


def test_qa_accuracy_uses_reward_semantics():
    s = BenchmarkScores()
    s.update(Row("multiple choice", "image", "<answer>B</answer>", "<answer>B</answer>"))
    s.update(Row("multiple choice", "image", "<answer>B. dog</answer>", "<answer>B</answer>"))  # 0 (released)
    s.update(
        Row("regression", "video", "<answer>8.8</answer>", "<answer>10</answer>")
    )  # rel 0.12 < 1-θ: 8 of 10 θ
    out = s.compute()
    assert out["multiple choice/image"]["accuracy"] == pytest.approx(0.5)
    assert out["regression/video"]["accuracy"] == pytest.approx(0.8)


def test_segmentation_masks_ciou_and_jf():
    gt = np.zeros((10, 10), bool)
    gt[:, :5] = True  # 50 px
    pred = np.zeros((10, 10), bool)
    pred[:, :4] = True  # 40 px inside
    s = BenchmarkScores()
    s.update(Row("segmentation", "image", "", "", pred_masks=pred, gt_masks=gt))
    s.update(Row("segmentation", "image", "", "", pred_masks=np.zeros_like(gt), gt_masks=gt, mask_ok=False))
    out = s.compute()["segmentation/image"]
    assert out["cIoU"] == pytest.approx(40 / 100)  # (40 + 0) / (50 + 50)
    assert out["gIoU"] == pytest.approx(0.4)
    assert out["unparseable"] == 1
    s.update(Row("segmentation", "video", "", "", pred_masks=np.stack([gt, gt]), gt_masks=np.stack([gt, gt])))
    assert s.compute()["segmentation/video"]["J&F"] == pytest.approx(1.0)


def test_mask_rle_round_trip():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.5
    assert np.array_equal(decode_mask(json.loads(json.dumps(encode_mask(mask)))), mask)


def test_prediction_store_resumes_and_merges(tmp_path):
    rows = [{"benchmark": "b", "problem_id": i, "index": i, "x": i} for i in range(4)]
    rank0, rank1 = PredictionStore(tmp_path, 0, 2), PredictionStore(tmp_path, 1, 2)
    rank0.append(rows[:1])
    rank1.append(rows[1:2])
    with rank1.shard.open("a") as f:
        f.write('{"benchmark": "b", "probl')  # a writer killed mid-line
    assert PredictionStore(tmp_path).done() == {("b", 0), ("b", 1)}
    merged = rank0.merge(rows[2:] + rows[:1])  # a duplicate (padded sampler) is kept once
    assert [r["problem_id"] for r in merged] == [0, 1, 2, 3]
    assert not list(tmp_path.glob("predictions.rank*"))
    assert len(PredictionStore.read(tmp_path / "predictions.jsonl")) == 4


def test_summary_table_lists_counts():
    metrics = {"benchmarks": {"eval_x": {"tasks": {"tracking": {"AO": 0.5, "samples": 3, "unparseable": 1}}}}}
    assert "| eval_x | tracking | AO 50.0 | 3 | 1 |" in summary_table(metrics)
