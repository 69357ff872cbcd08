"""Free-form answers: multiple choice, numerical, regression, OCR, math, open-ended (SPEC §5)."""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import jiwer
import numpy as np
from math_verify import parse as mv_parse
from math_verify import verify as mv_verify
from mathruler.grader import grade_answer
from mathruler.math_normalize import normalize_answer
from rouge_score import rouge_scorer

from .parsing import as_float
from .registry import register_reward
from .timeout import call_with_timeout

__all__ = [
    "TIME_LIMITED_TASKS",
    "multiple_choice_accuracy",
    "numerical_accuracy",
    "regression_accuracy",
    "mean_relative_accuracy",
    "ocr_accuracy",
    "math_accuracy",
    "rouge_accuracy",
    "set_math_timeout",
    "get_math_timeout",
    "parse_number",
]

_MATH_TIMEOUT_S: float | None = 5.0  # math-verify's own default per call
# The rewards whose symbolic checks run under that limit; their time-outs are counted per task
# (`rewards.reward_timeouts()`, logged as `train/reward_timeouts/<task>`).
TIME_LIMITED_TASKS: tuple[str, ...] = ("math", "multiple choice")
_CACHE_MAX_CHARS = 256  # cache only short answers (the common case), never 100k-char ones


class _DropTimeoutNotice(logging.Filter):
    """math-verify warns once that its own timeout is off; ours replaces it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutNotice())
# mathruler's LaTeX-to-text step warns on every bare `\frac12`-style input; only errors matter to us.
logging.getLogger("pylatexenc.latex2text").setLevel(logging.ERROR)


def set_math_timeout(seconds: float | None) -> None:
    """Time limit for one math (and sympy-backed multiple-choice) check; None disables it."""
    global _MATH_TIMEOUT_S
    _MATH_TIMEOUT_S = seconds


def get_math_timeout() -> float | None:
    """The current math time limit in seconds."""
    return _MATH_TIMEOUT_S


def _non_empty(gt: str) -> str | None:
    return None if gt.strip() else "empty answer"


def parse_number(s: str) -> float | None:
    """Released `normalize_number`: drop commas, then `float()`; None on failure."""
    return as_float(s.replace(",", ""))


def _finite_number(gt: str) -> str | None:
    v = parse_number(gt)
    return None if v is not None and math.isfinite(v) else f"not a finite number: {gt[:50]!r}"


# ---------------- multiple choice ----------------


def _grade(pred: str, gt: str) -> bool:
    try:
        return bool(grade_answer(pred, gt))
    except Exception:  # mathruler is defensive, but sympy may still throw
        return False


@lru_cache(maxsize=16384)
def _grade_cached(pred: str, gt: str) -> bool:
    return call_with_timeout(_grade, (pred, gt), _MATH_TIMEOUT_S, False, label=TIME_LIMITED_TASKS[1])


def _grade_timed(pred: str, gt: str) -> bool:
    if len(pred) <= _CACHE_MAX_CHARS and len(gt) <= _CACHE_MAX_CHARS:
        return _grade_cached(pred, gt)
    return call_with_timeout(_grade, (pred, gt), _MATH_TIMEOUT_S, False, label=TIME_LIMITED_TASKS[1])


def _single_letter(s: str) -> bool:
    return len(s) == 1 and s.isascii() and s.isalpha()


@register_reward("multiple choice", check_answer=_non_empty)
def multiple_choice_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """1 if `mathruler.grade_answer` accepts the letter (case, `(B)`, `\\boxed{B}`, `$B$`...)."""
    p, g = pred.strip(), gt.strip()
    if _single_letter(p) and _single_letter(g):
        # Shortcut with grade_answer's result: it lower-cases, and sympy says distinct symbols differ.
        return float(p.lower() == g.lower())
    return float(_grade_timed(p, g))


# ---------------- numbers ----------------


@register_reward("numerical", check_answer=_finite_number)
def numerical_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """1 if round(pred, 2) == round(gt, 2)."""
    p, g = parse_number(pred), parse_number(gt)
    if p is None or g is None or not (math.isfinite(p) and math.isfinite(g)):
        return 0.0
    return float(round(p, 2) == round(g, 2))


# Thresholds 0.50, 0.55, ..., 0.95 in float32, as torch.arange gives them in the released code.
_ONE_MINUS_THETA = np.float32(1.0) - np.array([0.5 + 0.05 * i for i in range(10)], dtype=np.float32)


def mean_relative_accuracy(pred: float, target: float) -> float:
    """Released MRA, in float32: mean over θ of 1[|p−g|/(|g|+1e-8) < 1−θ]."""
    with np.errstate(all="ignore"):
        p, g = np.float32(pred), np.float32(target)
        rel = np.abs(p - g) / (np.abs(g) + np.float32(1e-8))
        hits = int(np.count_nonzero(rel < _ONE_MINUS_THETA))
    return float(np.float32(hits) / np.float32(10))  # float32 mean, as `.float().mean().item()`


@register_reward("regression", check_answer=_finite_number)
def regression_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """Mean relative accuracy of a number."""
    p, g = parse_number(pred), parse_number(gt)
    if p is None or g is None or not (math.isfinite(p) and math.isfinite(g)):
        return 0.0
    return mean_relative_accuracy(p, g)


# ---------------- OCR ----------------


@register_reward("ocr", check_answer=_non_empty)
def ocr_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """max(0, 1 − WER), words split on any whitespace as in the released code."""
    ref, hyp = gt.split(), pred.split()
    if not ref:  # jiwer rejects an empty reference; released gives 1 − len(hyp), clipped
        return 1.0 if not hyp else 0.0
    if not hyp:
        return 0.0
    wer = jiwer.wer(" ".join(ref), " ".join(hyp))
    return max(0.0, min(1.0, 1.0 - wer))


# ---------------- math ----------------


def _math_equal(pred: str, gt: str) -> bool:
    gold, target = mv_parse(gt, parsing_timeout=None), mv_parse(pred, parsing_timeout=None)
    if gold and target:
        return bool(mv_verify(gold, target, timeout_seconds=None))
    # Either side parsed to nothing (e.g. no `$…$`): compare as normalized math strings.
    return _grade(pred, gt)


def _strings_equal(pred: str, gt: str) -> bool:
    """No-sympy fallback after a timeout: Hendrycks-MATH string normalization only."""
    try:
        a, b = normalize_answer(pred), normalize_answer(gt)
    except Exception:
        a, b = pred.strip(), gt.strip()
    return bool(a) and a == b


@register_reward("math", check_answer=_non_empty)
def math_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """Symbolic equivalence with math-verify, else a normalized string match; time-limited."""
    try:
        res = call_with_timeout(_math_equal, (pred, gt), _MATH_TIMEOUT_S, None, label=TIME_LIMITED_TASKS[0])
    except Exception:  # math-verify/sympy internals; scored by the string fallback
        res = None
    if res is None:
        return float(_strings_equal(pred, gt))
    return float(res)


# ---------------- open-ended ----------------

_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
# ROUGE-L is quadratic in length: a 200k-word response took ~20 s. Only the first ROUGE_MAX_WORDS
# words of each side are scored, well above a 4,096-token response (about 3,000 words).
ROUGE_MAX_WORDS = 4096


def _first_words(text: str, limit: int = ROUGE_MAX_WORDS) -> str:
    words = text.split(maxsplit=limit)
    return " ".join(words[:limit]) if len(words) > limit else text


def rouge_accuracy(gt: str, pred: str) -> float:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 with Porter stemming, over the first
    ``ROUGE_MAX_WORDS`` words of each side."""
    s = _ROUGE.score(_first_words(gt), _first_words(pred))
    v = (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3.0
    return max(0.0, min(1.0, v))


@register_reward("open-ended", check_answer=_non_empty)
def open_ended_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    """ROUGE accuracy (a reward model can replace it in `score_batch`)."""
    return rouge_accuracy(gt, pred)
