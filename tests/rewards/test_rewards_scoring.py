"""score / score_batch: format, structure bonus, overall, variants, registry and data errors."""

from __future__ import annotations

import json
import logging
import math

import pytest

import rewards
from rewards import RewardDataError, RewardResult, UnknownTaskError, score, score_batch

J = json.dumps
PTS = [[100, 100], [500, 500], [900, 100]]
NEG = [[100, 900], [500, 800], [900, 900]]


def wrap(ans: str) -> str:
    return f"<think>reasoning</think><answer>{ans}</answer>"


def test_overall_released_and_paper() -> None:
    r = score(wrap("B"), "<answer>B</answer>", "multiple choice", "image")
    assert r == RewardResult(overall=1.5, accuracy=1.0, format=1.0, structure=0.5)
    assert r.as_dict() == {"overall": 1.5, "accuracy": 1.0, "format": 1.0, "structure": 0.5}
    p = score(wrap("B"), "<answer>B</answer>", "multiple choice", "image", variant="paper")
    assert (p.overall, p.structure) == (2.0, 0.0)
    with pytest.raises(ValueError):
        score("B", "B", "multiple choice", "image", variant="nope")


def test_bare_answer_scores_accuracy_without_format() -> None:
    r = score("A", "<answer>A</answer>", "multiple choice", "image")
    assert (r.accuracy, r.format, r.structure, r.overall) == (1.0, 0.0, 0.0, pytest.approx(0.9))


def test_non_string_response_does_not_raise() -> None:
    r = score(None, "<answer>A</answer>", "multiple choice", "image")  # type: ignore[arg-type]
    assert r.overall == 0.0


def test_spaced_tags_pass() -> None:
    r = score(
        "< think >hmm< / think > < answer > C < / answer >", "<answer>C</answer>", "multiple choice", "video"
    )
    assert (r.accuracy, r.format, r.structure) == (1.0, 1.0, 0.5)


def test_empty_answer_falls_back_to_whole_response() -> None:
    r = score(
        "<think>the cat sat</think><answer></answer>", "<answer>the cat sat</answer>", "open-ended", "image"
    )
    assert r.format == 1.0 and 0 < r.accuracy < 1 and r.structure == 0.5


@pytest.mark.parametrize(
    "pt,dt,ans,gt,structure",
    [
        ("numerical", "image", "x", "3", 0.5),  # QA types: 0.5 whatever the answer
        ("temporal grounding", "video", '{"time": [1, 2]}', '{"time": [0, 5]}', 0.5),
        ("temporal grounding", "video", '{"time": [1]}', '{"time": [0, 5]}', 0.0),
        ("temporal grounding", "video", '{"time": ["1", "2"]}', '{"time": [0, 5]}', 0.5),  # float() works
        ("spatial grounding", "image", '{"boxes": [1, 2, 3, 4]}', '{"boxes": [0, 0, 5, 5]}', 0.5),
        ("spatial grounding", "image", '{"boxes": [1, 2, 3]}', '{"boxes": [0, 0, 5, 5]}', 0.0),
        (
            "segmentation",
            "image",
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG}),
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG}),
            0.5,
        ),
        (
            "segmentation",
            "image",
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS[:2], "negative_points": NEG}),
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG}),
            0.0,
        ),
        (
            "segmentation",
            "video",
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG}),
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG, "time": 2}),
            0.0,
        ),
        # tracking: valid schema 0.25 + 0.25 × 2 of 4 GT keys
        (
            "tracking",
            "video",
            J({"boxes": {"1": [0, 0, 1, 1], "2": [0, 0, 1, 1], "9": [0, 0, 1, 1]}}),
            J({"boxes": {str(k): [0, 0, 1, 1] for k in range(1, 5)}}),
            0.375,
        ),
        # invalid box value: no schema part, coverage still counts (released)
        (
            "tracking",
            "video",
            J({"boxes": {"1": "x"}}),
            J({"boxes": {str(k): [0, 0, 1, 1] for k in range(1, 5)}}),
            0.0625,
        ),
        # spatio-temporal: only the length of "time" is checked for the schema part
        (
            "spatial-temporal grounding",
            "video",
            J({"time": ["a", "b"], "boxes": {"1": [0, 0, 1, 1]}}),
            J({"time": [0, 1], "boxes": {"1": [0, 0, 1, 1]}}),
            0.5,
        ),
    ],
)
def test_structure_bonus(pt: str, dt: str, ans: str, gt: str, structure: float) -> None:
    r = score(wrap(ans), f"<answer>{gt}</answer>", pt, dt)
    assert r.structure == pytest.approx(structure)
    assert score(ans, f"<answer>{gt}</answer>", pt, dt).structure == 0.0  # forced 0 without format


def test_released_json_is_strict() -> None:
    gt = '<answer>{"time": [0, 10]}</answer>'
    for bad in [
        "{'time': [2, 4]}",
        '{"time": [2, 4],}',
        '```json\n{"time": [2, 4]}\n```',
        'time {"time": [2, 4]}',
    ]:
        r = score(wrap(bad), gt, "temporal grounding", "video")
        assert (r.accuracy, r.structure) == (0.0, 0.0), bad


def test_registry_unknown_task_lists_registered() -> None:
    with pytest.raises(UnknownTaskError) as e:
        rewards.check_tasks([("multiple choice", "image"), ("counting", "image")])
    assert "counting" in str(e.value) and "multiple choice/*" in str(e.value)
    with pytest.raises(UnknownTaskError):
        rewards.get_reward("segmentation", "audio")
    with pytest.raises(UnknownTaskError):
        score("x", "y", "counting", "image")
    rewards.check_tasks([("OCR", "image"), ("segmentation", "video")])  # case-insensitive, no error


def test_register_user_task() -> None:
    @rewards.register_reward("parity", data_type="image", structure=0.25)
    def parity(pred: str, gt: str, variant: str) -> float:
        return float(pred.strip() == gt.strip())

    try:
        r = score(wrap("even"), "<answer>even</answer>", "parity", "image")
        assert (r.accuracy, r.structure, r.overall) == (1.0, 0.25, pytest.approx(1.25))
        with pytest.raises(ValueError):
            rewards.register_reward("parity", data_type="image")(parity)
        res = score_batch(
            [wrap("odd")] * 80,
            ["<answer>odd</answer>"] * 80,
            ["parity"] * 80,
            ["image"] * 80,
            workers=2,
            chunk_size=16,
        )  # workers cannot see it: parent scores those rows
        assert all(x.accuracy == 1.0 for x in res)
    finally:
        rewards.unregister_reward("parity", "image")
        rewards.shutdown_pools()


@pytest.mark.parametrize(
    "pt,dt,gt",
    [
        ("numerical", "image", "twelve"),
        ("regression", "image", "nan"),
        ("multiple choice", "image", "  "),
        ("temporal grounding", "video", '{"time": [5, 2]}'),
        ("spatial grounding", "image", "{'boxes': [0,0,1,1]}"),
        ("tracking", "video", '{"boxes": {}}'),
        ("spatial-temporal grounding", "video", '{"time": [0, 1]}'),
        (
            "segmentation",
            "image",
            J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG[:2]}),
        ),
        ("segmentation", "video", J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG})),
    ],
)
def test_bad_ground_truth_is_reported_once_per_record(pt, dt, gt, caplog) -> None:
    rewards.reset_counters()
    with caplog.at_level(logging.WARNING, logger="rewards"):
        a = score(wrap("x"), f"<answer>{gt}</answer>", pt, dt, problem_id=41)
        b = score(wrap("y"), f"<answer>{gt}</answer>", pt, dt, problem_id=41)
        score_batch(
            [wrap("z")] * 3, [f"<answer>{gt}</answer>"] * 3, [pt] * 3, [dt] * 3, problem_ids=[41, 41, 42]
        )
    assert a.answer_error and b.answer_error
    msgs = [r.getMessage() for r in caplog.records if "malformed ground truth" in r.getMessage()]
    assert len(msgs) == 2 and "problem_id=41" in msgs[0] and "problem_id=42" in msgs[1]
    assert sum(rewards.data_error_counts().values()) == 2
    with pytest.raises(RewardDataError):
        score(wrap("x"), f"<answer>{gt}</answer>", pt, dt, problem_id=41, on_bad_answer="raise")


def test_good_ground_truth_is_not_flagged() -> None:
    rewards.reset_counters()
    r = score(wrap('{"time": [1, 2]}'), '<answer>{"time": [0, 5]}</answer>', "temporal grounding", "video")
    assert r.answer_error is None and rewards.data_error_counts() == {}


def _corpus() -> tuple[list[str], list[str], list[str], list[str]]:
    rows = [
        (wrap("B"), "B", "multiple choice", "image"),
        ("A", "B", "multiple choice", "video"),
        (wrap("3.14"), "3.14159", "numerical", "image"),
        (wrap("110"), "100", "regression", "video"),
        (wrap("hello world"), "hello word", "OCR", "image"),
        (wrap("0.5"), "\\frac{1}{2}", "math", "image"),
        (wrap("a man rides a horse"), "a man riding a horse", "open-ended", "video"),
        (wrap('{"time": [1, 3]}'), '{"time": [2, 4]}', "temporal grounding", "video"),
        (wrap('{"boxes": [0, 0, 4, 4]}'), '{"boxes": [2, 2, 6, 6]}', "spatial grounding", "image"),
        (
            wrap(J({"boxes": {"1": [0, 0, 4, 4]}})),
            J({"boxes": {"1": [2, 2, 6, 6], "2": [0, 0, 1, 1]}}),
            "tracking",
            "video",
        ),
    ]
    rows = rows * 9
    return tuple(list(c) for c in zip(*rows))  # type: ignore[return-value]


def test_score_batch_matches_score_serial_and_parallel() -> None:
    resp, gts, pts, dts = _corpus()
    gts = [f"<answer>{g}</answer>" for g in gts]
    expected = [score(r, g, p, d) for r, g, p, d in zip(resp, gts, pts, dts)]
    assert score_batch(resp, gts, pts, dts) == expected
    assert score_batch(resp, gts, pts, dts, workers=2, chunk_size=8) == expected
    rewards.shutdown_pools()
    with pytest.raises(ValueError):
        score_batch(resp, gts[:-1], pts, dts)
    with pytest.raises(UnknownTaskError):
        score_batch(["x"], ["y"], ["counting"], ["image"])


def test_results_are_finite_for_nan_inputs() -> None:
    seg_gt = J({"boxes": [0, 0, 5, 5], "positive_points": PTS, "negative_points": NEG, "time": 2})
    nan_pred = seg_gt.replace('"time": 2', '"time": NaN')
    r = score(wrap(nan_pred), f"<answer>{seg_gt}</answer>", "segmentation", "video")
    assert all(math.isfinite(v) for v in r.as_dict().values()) and r.accuracy == 0.0
