"""Hand-computed cases for multiple choice, numerical, regression, OCR, math and open-ended."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mathruler.grader import grade_answer

import rewards
from rewards.qa import (
    math_accuracy,
    mean_relative_accuracy,
    multiple_choice_accuracy,
    numerical_accuracy,
    ocr_accuracy,
    regression_accuracy,
    rouge_accuracy,
)

F32 = lambda x: float(np.float32(x))  # noqa: E731  (the released MRA returns float32 values)


@pytest.mark.parametrize(
    "pred,acc",
    [
        ("B", 1),
        ("b", 1),
        (" B ", 1),
        ("(B)", 1),
        ("\\boxed{B}", 1),
        ("$B$", 1),
        ("\\text{B}", 1),
        ("B.", 0),
        ("B. dog", 0),
        ("Option B", 0),
        ("A", 0),
        ("", 0),
    ],
)
def test_multiple_choice(pred: str, acc: int) -> None:
    assert multiple_choice_accuracy(pred, "B") == acc


def test_multiple_choice_letter_shortcut_matches_grade_answer() -> None:
    for p in "ABCDEFabceinoqsEINOQSxyz":
        for g in "ABCDEabeiIsSNOQ":
            assert multiple_choice_accuracy(p, g) == float(grade_answer(p, g)), (p, g)


@pytest.mark.parametrize(
    "pred,gt,acc",
    [
        ("3.14159", "3.14", 1),
        ("3.146", "3.14", 0),
        ("1,000", "1000", 1),
        ("12", "12.0", 1),
        ("nan", "1", 0),
        ("inf", "1", 0),
        ("1e999", "1", 0),
        ("twelve", "12", 0),
        ("", "12", 0),
    ],
)
def test_numerical(pred: str, gt: str, acc: int) -> None:
    assert numerical_accuracy(pred, gt) == acc


@pytest.mark.parametrize(
    "pred,gt,mra",
    [
        ("100", "100", 1.0),
        ("120", "100", F32(0.6)),  # rel 0.2f < 1−θ for θ ≤ 0.75 (1 − 0.8f = 0.19999999): 6 of 10
        ("110", "100", F32(0.9)),  # float32: 0.1f < 1 − 0.9f = 0.100000024, so 9 of 10 (not 8)
        ("149", "100", F32(0.1)),  # rel 0.49 < 0.50 only
        ("150", "100", 0.0),  # rel 0.50 is not < 0.50 (strict)
        ("105", "100", 1.0),  # float32: 1 − 0.95f = 0.050000012 > 0.05f, so all 10 pass
        ("-100", "100", 0.0),
        ("0", "0", 1.0),
        ("1", "0", 0.0),
        ("abc", "100", 0.0),
        ("1e300", "100", 0.0),
    ],
)
def test_regression_mra_edges(pred: str, gt: str, mra: float) -> None:
    assert regression_accuracy(pred, gt) == mra


def _torch_mra(p: float, g: float) -> float:
    """The released formula, written with torch as the authors did."""
    pt, gt = torch.tensor(p, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)
    rel = torch.abs(pt - gt) / (torch.abs(gt) + 1e-8)
    th = torch.arange(0.5, 0.95 + 0.025, 0.05, dtype=torch.float32)
    return (rel < (1 - th)).float().mean().item()


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.floats(-1e4, 1e4, allow_nan=False))
def test_mra_matches_float32_torch_reference(p: float, g: float) -> None:
    assert mean_relative_accuracy(p, g) == _torch_mra(p, g)


def test_mra_matches_torch_at_all_threshold_edges() -> None:
    for g in (1.0, 7.0, 100.0, 123.456, -50.0):
        for k in range(0, 21):
            for eps in (-1e-6, 0.0, 1e-6):
                p = g + abs(g) * (0.05 * k + eps)
                assert mean_relative_accuracy(p, g) == _torch_mra(p, g), (p, g)


@pytest.mark.parametrize(
    "pred,gt,acc",
    [
        ("a b c d", "a b c d", 1.0),
        ("a x c", "a b c d", 0.5),  # 1 substitution + 1 deletion of 4 words
        ("a b c d e f g h i", "a b", 0.0),  # WER 3.5, clipped
        ("a\nb\tc", "a b c", 1.0),
        ("", "a b", 0.0),
        ("", "", 1.0),
        ("x", "", 0.0),
    ],
)
def test_ocr(pred: str, gt: str, acc: float) -> None:
    assert ocr_accuracy(pred, gt) == pytest.approx(acc)


def test_rouge_scores_a_huge_response_quickly_on_its_first_words() -> None:
    """A 200k-word response (about 20 s of ROUGE-L uncapped) is scored on its first ROUGE_MAX_WORDS
    words: quickly, and as those words alone would score."""
    import time

    from rewards.qa import ROUGE_MAX_WORDS

    gt = "the cat sat on the mat"
    head = ("the cat sat " * ROUGE_MAX_WORDS).split()[:ROUGE_MAX_WORDS]
    huge = " ".join(head + ["dog"] * 200_000)
    started = time.perf_counter()
    value = rouge_accuracy(gt, huge)
    assert time.perf_counter() - started < 5.0
    assert value == pytest.approx(rouge_accuracy(gt, " ".join(head)))
    assert rouge_accuracy(gt, "the cat sat on the mat") == pytest.approx(1.0)  # short texts unchanged


def test_open_ended_rouge_hand_computed() -> None:
    # R1 F = 2/3, R2 F = 1/2 ({the cat} of 2 bigrams each), RL F = 2/3 (LCS "the cat")
    assert rouge_accuracy("the cat sat", "the cat ran") == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert rouge_accuracy("cats running", "cat run") == pytest.approx(1.0)  # Porter stemming
    assert rouge_accuracy("a dog", "") == 0.0


@pytest.mark.parametrize(
    "pred,gt,acc",
    [
        ("0.5", "\\frac{1}{2}", 1),
        ("$\\frac{1}{2}$", "0.5", 1),
        ("\\frac12", "\\frac{1}{2}", 1),
        ("0.6", "\\frac{1}{2}", 0),
        ("x+1", "x+1", 1),  # math-verify parses neither: string match
        ("\\text{east}", "\\text{east}", 1),
        ("west", "east", 0),
        ("", "1", 0),
    ],
)
def test_math(pred: str, gt: str, acc: int) -> None:
    assert math_accuracy(pred, gt) == acc


SLOW_MATH = ("$9^{9^{9}}$", "3")  # sympy tries to evaluate a 370-million-digit integer


@pytest.fixture
def short_timeout():
    old = rewards.get_math_timeout()
    rewards.set_math_timeout(0.5)
    yield
    rewards.set_math_timeout(old)


def _math_timeouts() -> int:
    return rewards.reward_timeouts().get("math", 0)


def test_math_timeout_main_thread(short_timeout) -> None:
    before = _math_timeouts()
    t0 = time.perf_counter()
    assert math_accuracy(*SLOW_MATH) == 0.0
    assert time.perf_counter() - t0 < 3.0
    assert math_accuracy("0.5", "\\frac{1}{2}") == 1.0  # the alarm is gone afterwards
    assert _math_timeouts() == before + 1  # counted once; the quick call is not


def test_math_timeout_outside_main_thread(short_timeout) -> None:
    out: list[float] = []
    before = _math_timeouts()
    th = threading.Thread(target=lambda: out.extend([math_accuracy(*SLOW_MATH), math_accuracy("0.5", "1/2")]))
    t0 = time.perf_counter()
    th.start()
    th.join(60)
    assert out == [0.0, 1.0]
    assert time.perf_counter() - t0 < 30.0  # includes starting the helper process
    assert _math_timeouts() == before + 1


def test_math_timeout_in_worker_processes(short_timeout) -> None:
    rewards.shutdown_pools()
    before = _math_timeouts()
    n = 4
    res = rewards.score_batch(
        ["<think>x</think><answer>" + SLOW_MATH[0] + "</answer>"] * n + ["<answer>0.5</answer>"] * n,
        ["<answer>3</answer>"] * n + ["<answer>\\frac{1}{2}</answer>"] * n,
        ["math"] * 2 * n,
        ["image"] * 2 * n,
        workers=2,
        chunk_size=2,
    )
    rewards.shutdown_pools()
    assert [r.accuracy for r in res] == [0.0] * n + [1.0] * n
    assert _math_timeouts() == before + n  # the workers' time-outs reach the parent's count


def test_call_with_timeout_restores_outer_state() -> None:
    assert rewards.call_with_timeout(time.sleep, (5,), 0.2, "late") == "late"
    assert rewards.call_with_timeout(sum, ([1, 2],), 0.2, None) == 3
