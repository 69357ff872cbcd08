"""Answer extraction, JSON loading and number coercion (SPEC §5, released-code semantics)."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

__all__ = [
    "FORMAT_PATTERN",
    "ANSWER_PATTERN",
    "normalize_response",
    "extract_answer",
    "format_ok",
    "answer_for_accuracy",
    "strip_ground_truth",
    "load_json",
    "load_gt_json",
    "as_float",
    "as_number_list",
    "is_json_number",
]

# The released regexes, verbatim in meaning: DOTALL, lazy groups, first match wins.
FORMAT_PATTERN = re.compile(r"\A\s*<think>.*?</think>\s*<answer>.*?</answer>\s*\Z", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_WS = re.compile(r"\s*")
_WS_RUN = re.compile(r"\s+")
_SPECIAL = "<>/"
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*\Z", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_MAX_JSON_CHARS = 1_000_000  # guard for pathological inputs; far above any valid answer


def normalize_response(response: Any) -> str:
    """Remove whitespace around `<`, `>` and `/` (released normalization; also fixes `< answer >`).

    Same result as the released `re.sub(r"\\s*(<|>|/)\\s*", r"\\1", s)`, in linear time: that regex is
    quadratic on long whitespace runs.
    """
    if not isinstance(response, str):
        response = "" if response is None else str(response)
    s = response

    def repl(m: re.Match[str]) -> str:
        i, j = m.start(), m.end()
        if (i > 0 and s[i - 1] in _SPECIAL) or (j < len(s) and s[j] in _SPECIAL):
            return ""
        return m.group(0)

    return _WS_RUN.sub(repl, s)


def format_ok(normalized: str) -> bool:
    """Same result as `FORMAT_PATTERN.match`, in linear time (the regex is quadratic on tag soup)."""
    p0 = _WS.match(normalized).end()
    if not normalized.startswith("<think>", p0):
        return False
    z = len(normalized.rstrip()) - len("</answer>")
    if z < p0 + 7 or not normalized.startswith("</answer>", z):
        return False
    j = normalized.find("</think>", p0 + 7)
    while j != -1:
        a = _WS.match(normalized, j + 8).end()
        if a + 8 > z:
            return False
        if normalized.startswith("<answer>", a):
            return True
        j = normalized.find("</think>", j + 1)
    return False


def extract_answer(text: str) -> str:
    """Text of the first `<answer>…</answer>`, stripped; "" when there is none.

    Same result as `ANSWER_PATTERN.search(text).group(1).strip()`, in linear time.
    """
    a = text.find("<answer>")
    if a == -1:
        return ""
    e = text.find("</answer>", a + 8)
    return "" if e == -1 else text[a + 8 : e].strip()


def answer_for_accuracy(normalized_response: str) -> str:
    """The tagged answer, or the whole stripped response when it is missing or empty."""
    return extract_answer(normalized_response) or normalized_response.strip()


def strip_ground_truth(answer: Any) -> str:
    """Ground truth without tags; as released, untagged text is kept verbatim."""
    if not isinstance(answer, str):
        answer = "" if answer is None else str(answer)
    return extract_answer(answer) or answer


def _lenient_text(s: str) -> str:
    m = _FENCE.match(s)
    if m:
        s = m.group(1)
    s = _TRAILING_COMMA.sub(r"\1", s)
    # Single quotes -> double quotes; only when no double quotes are present (evaluation aid).
    if "'" in s and '"' not in s:
        s = s.replace("'", '"')
    return s


def load_json(s: str, *, lenient: bool = False) -> Any:
    """Strict `json.loads` (released); None on any failure.

    `lenient=True` (evaluation only) also accepts code fences, trailing commas and single quotes.
    """
    if not isinstance(s, str) or len(s) > _MAX_JSON_CHARS:
        return None
    try:
        return json.loads(s)
    except (ValueError, RecursionError, TypeError):
        pass
    if not lenient:
        return None
    try:
        return json.loads(_lenient_text(s))
    except (ValueError, RecursionError, TypeError):
        return None


@lru_cache(maxsize=8192)
def load_gt_json(s: str) -> Any:
    """Cached strict parse of a ground-truth string (the same GT repeats across rollouts). Do not mutate."""
    return load_json(s)


def as_float(v: Any) -> float | None:
    """`float(v)` if it succeeds (released rule: strings and bools count), else None."""
    if isinstance(v, (list, dict)) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def as_number_list(x: Any, n: int) -> list[float] | None:
    """A list of exactly `n` values that `float()` accepts, converted; else None."""
    if not isinstance(x, list) or len(x) != n:
        return None
    out = [as_float(v) for v in x]
    if any(v is None for v in out):
        return None
    return out  # type: ignore[return-value]


def is_json_number(v: Any) -> bool:
    """`isinstance(v, (int, float))`, the released check for the segmentation key-frame time."""
    return isinstance(v, (int, float))


def all_finite(values: list[float]) -> bool:
    """True when every value is finite."""
    return all(math.isfinite(v) for v in values)
