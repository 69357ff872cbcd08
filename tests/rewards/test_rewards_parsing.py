"""Extraction, normalization, format check and JSON loading (SPEC §5 released semantics)."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.parsing import (
    ANSWER_PATTERN,
    FORMAT_PATTERN,
    answer_for_accuracy,
    as_float,
    as_number_list,
    extract_answer,
    format_ok,
    load_json,
    normalize_response,
    strip_ground_truth,
)

_TOKENS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    " ",
    "\n",
    "\t",
    "\u2003",
    "a",
    "<",
    ">",
    "/",
    "answer",
    "think",
    "{",
    "}",
]
soup = st.lists(st.sampled_from(_TOKENS), max_size=14).map("".join)


def _released_normalize(s: str) -> str:
    return re.sub(r"\s*(<|>|/)\s*", r"\1", s)


def _released_extract(s: str) -> str:
    m = ANSWER_PATTERN.search(s)
    return m.group(1).strip() if m else ""


@settings(max_examples=400, deadline=None)
@given(soup)
def test_linear_helpers_agree_with_released_regexes(s: str) -> None:
    norm = normalize_response(s)
    assert norm == _released_normalize(s)
    for t in (s, norm):
        assert format_ok(t) == bool(FORMAT_PATTERN.match(t))
        assert extract_answer(t) == _released_extract(t)


def test_linear_time_on_tag_soup() -> None:
    # The released regexes take seconds on these; ours must stay linear.
    bad = [
        "<think>" + "</think><answer>x</answer>y" * 4000,
        "<think>" + "</think><answer>" * 6000,
        "<answer>" * 20000 + " " * 20000,
        " " * 100_000 + "<",
    ]
    t0 = time.perf_counter()
    for s in bad:
        format_ok(normalize_response(s))
        extract_answer(s)
    assert time.perf_counter() - t0 < 0.5


def test_normalization_removes_space_around_tag_chars() -> None:
    assert normalize_response("< answer > B < / answer >") == "<answer>B</answer>"
    assert normalize_response("a / b  c") == "a/b  c"  # inner answer text too, as released
    assert normalize_response(None) == ""


def test_extraction_rules() -> None:
    assert extract_answer("<answer> B </answer>") == "B"
    assert extract_answer("<answer>x</answer><answer>y</answer>") == "x"  # first match
    assert extract_answer("<answer>x") == ""
    assert answer_for_accuracy("A") == "A"  # no tags: whole response
    assert answer_for_accuracy("<think>t</think><answer></answer>") == "<think>t</think><answer></answer>"


def test_ground_truth_stripping() -> None:
    assert strip_ground_truth("<answer> 3.5 </answer>") == "3.5"
    assert strip_ground_truth(" 3.5 ") == " 3.5 "  # untagged: kept verbatim, as released


def test_format_check() -> None:
    assert format_ok("<think>a</think><answer>b</answer>")
    assert format_ok("  <think>\na\n</think>\n<answer>b</answer>\n")
    assert format_ok(normalize_response("< think >a< / think >< answer >b< / answer >"))
    assert not format_ok("<answer>b</answer>")
    assert not format_ok("<think>a</think><answer>b</answer> tail")
    assert not format_ok("<think>a</think>x<answer>b</answer>")
    assert not format_ok("<think>a<answer>b</answer>")


def test_strict_and_lenient_json() -> None:
    assert load_json('{"time": [1, 2]}') == {"time": [1, 2]}
    for bad in [
        "{'time': [1, 2]}",
        '{"time": [1, 2],}',
        '```json\n{"time": [1, 2]}\n```',
        'The answer is {"time": [1, 2]}',
        '{"time": [1, 2]',
        "[" * 100_000,
    ]:
        assert load_json(bad) is None
    assert load_json("{'time': [1, 2]}", lenient=True) == {"time": [1, 2]}
    assert load_json('{"time": [1, 2,],}', lenient=True) == {"time": [1, 2]}
    assert load_json('```json\n{"time": [1, 2]}\n```', lenient=True) == {"time": [1, 2]}


def test_numbers_follow_float_semantics() -> None:
    assert as_float("12") == 12.0 and as_float(True) == 1.0
    assert as_float(None) is None and as_float([1]) is None and as_float("x") is None
    assert as_float(10**400) is None  # OverflowError
    assert as_number_list(["1", 2, 3.5, "4e1"], 4) == [1.0, 2.0, 3.5, 40.0]
    assert as_number_list([1, 2, 3], 4) is None and as_number_list({"a": 1}, 1) is None
