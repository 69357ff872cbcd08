"""Fuzz every task: random and mutated responses never raise, never give NaN, stay in range."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards

BOX = [10, 20, 300, 400]
PTS = [[100, 100], [500, 500], [900, 100]]
NEG = [[100, 900], [500, 800], [900, 900]]
VALID = {  # (problem_type, data_type): a correct answer, also used as ground truth
    ("multiple choice", "image"): "B",
    ("numerical", "image"): "3.5",
    ("regression", "video"): "42",
    ("OCR", "image"): "hello brave new world",
    ("math", "image"): "\\frac{1}{2}",
    ("open-ended", "video"): "a man rides a brown horse on the beach",
    ("temporal grounding", "video"): json.dumps({"time": [2.5, 8.0]}),
    ("spatial grounding", "image"): json.dumps({"boxes": BOX}),
    ("spatial-temporal grounding", "video"): json.dumps(
        {"time": [1, 3], "boxes": {"1": BOX, "2": BOX, "3": [20, 30, 310, 420]}}
    ),
    ("tracking", "video"): json.dumps({"boxes": {str(k): [10 + k, 20, 300, 400] for k in range(1, 9)}}),
    ("segmentation", "image"): json.dumps({"boxes": BOX, "positive_points": PTS, "negative_points": NEG}),
    ("segmentation", "video"): json.dumps(
        {"boxes": BOX, "positive_points": PTS, "negative_points": NEG, "time": 4}
    ),
}
TASKS = list(VALID)

WRAPPERS = [
    "<think>t</think><answer>{}</answer>",
    "{}",  # missing tags
    "<answer><answer>{}</answer></answer>",  # nested
    "<think>t</think><answer>{}</answer><answer>{}</answer>",  # repeated
    "< think >t< / think >< answer >{}< / answer >",
    "<think>t</think><answer>{}",  # unclosed tag
    "<think><think>t</think></think><answer>{}</answer>",
    "<answer>{}</answer><think>t</think>",
]

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -1, 0, 1000, 1e308, -1e308]),
    st.text(max_size=8),
    st.sampled_from(["12", "nan", "inf", "-0", "1e999", "1,5"]),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
    max_leaves=12,
)
boxes = st.lists(scalars, min_size=0, max_size=6)
points = st.lists(st.lists(scalars, max_size=3), max_size=5)
second_keys = st.one_of(
    st.integers(-2, 40).map(str), st.text(max_size=4), st.sampled_from(["1.0", "01", " 1"])
)


def _mutate_json(obj, data: st.DataObject):
    """Replace, drop or add something somewhere in a JSON answer."""
    if not isinstance(obj, (dict, list)) or data.draw(st.integers(0, 3)) == 0:
        return data.draw(json_values)
    if isinstance(obj, list):
        if not obj:
            return [data.draw(json_values)]
        i = data.draw(st.integers(0, len(obj) - 1))
        kind = data.draw(st.sampled_from(["child", "drop", "extra", "swap", "negate"]))
        out = list(obj)
        if kind == "child":
            out[i] = _mutate_json(out[i], data)
        elif kind == "drop":
            out.pop(i)
        elif kind == "extra":
            out.append(data.draw(json_values))
        elif kind == "swap":
            out.reverse()
        else:
            out = [-v if isinstance(v, (int, float)) else v for v in out]
        return out
    out = dict(obj)
    kind = data.draw(st.sampled_from(["child", "drop", "extra", "boxes", "points", "keys"]))
    keys = list(out)
    if kind == "child" and keys:
        k = data.draw(st.sampled_from(keys))
        out[k] = _mutate_json(out[k], data)
    elif kind == "drop" and keys:
        out.pop(data.draw(st.sampled_from(keys)))
    elif kind == "boxes":
        out["boxes"] = data.draw(boxes | st.dictionaries(second_keys, boxes, max_size=6))
    elif kind == "points":
        out[data.draw(st.sampled_from(["positive_points", "negative_points"]))] = data.draw(points)
    elif kind == "keys" and isinstance(out.get("boxes"), dict):  # tracking: missing / extra seconds
        b = dict(out["boxes"])
        for k in data.draw(st.lists(st.sampled_from(list(b)), max_size=3)) if b else []:
            b.pop(k, None)
        b.update(data.draw(st.dictionaries(second_keys, boxes, max_size=3)))
        out["boxes"] = b
    else:
        out[data.draw(st.text(max_size=6))] = data.draw(json_values)
    return out


def _mutate_text(s: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["truncate", "insert", "replace", "keep"]))
    if kind == "keep" or not s:
        return s
    i = data.draw(st.integers(0, len(s)))
    if kind == "truncate":  # e.g. unclosed JSON
        return s[:i]
    junk = data.draw(
        st.text(max_size=10) | st.sampled_from(["<answer>", "</answer>", "< answer >", "{", "]", '"'])
    )
    return s[:i] + junk + (s[i:] if kind == "insert" else s[i + 1 :])


def _check(res: rewards.RewardResult, variant: str) -> None:
    vals = res.as_dict()
    assert all(isinstance(v, float) and math.isfinite(v) for v in vals.values()), vals
    assert res.format in (0.0, 1.0)
    assert 0.0 <= res.structure <= 0.5
    assert 0.0 <= res.accuracy <= (2.0 if variant == "paper" else 1.0)
    assert 0.0 <= res.overall <= (3.0 if variant == "paper" else 1.5)


@pytest.fixture(autouse=True)
def _guard():
    old = rewards.get_math_timeout()
    rewards.set_math_timeout(1.0)
    rewards.reset_counters()
    yield
    rewards.set_math_timeout(old)
    assert rewards.guarded_error_counts() == {}, "a built-in reward raised"


@pytest.mark.parametrize("task", TASKS, ids=lambda t: "/".join(t))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_answers(task: tuple[str, str], data: st.DataObject) -> None:
    gt = VALID[task]
    obj = rewards.load_json(gt)
    ans = json.dumps(_mutate_json(obj, data)) if isinstance(obj, dict) else gt
    ans = _mutate_text(ans, data)
    wrapper = data.draw(st.sampled_from(WRAPPERS))
    variant = data.draw(st.sampled_from(["released", "paper"]))
    _check(
        rewards.score(wrapper.replace("{}", ans), f"<answer>{gt}</answer>", *task, variant=variant), variant
    )


@pytest.mark.parametrize("task", TASKS, ids=lambda t: "/".join(t))
@settings(max_examples=25, deadline=None)
@given(text=st.text(max_size=300), wrapper=st.sampled_from(WRAPPERS))
def test_random_unicode(task: tuple[str, str], text: str, wrapper: str) -> None:
    _check(rewards.score(wrapper.replace("{}", text), f"<answer>{VALID[task]}</answer>", *task), "released")


@pytest.mark.parametrize("task", TASKS, ids=lambda t: "/".join(t))
def test_huge_responses(task: tuple[str, str]) -> None:
    rng = random.Random(hash(task) % 1000)
    alphabet = "ab {}[]<>/\"':,.0123456789\n\u00e9\u4e2d\U0001f600"
    pad = "".join(rng.choice(alphabet) for _ in range(50_000))
    gt = f"<answer>{VALID[task]}</answer>"
    for resp in (pad + f"<answer>{VALID[task]}</answer>" + pad, "<think>" + pad + "</think><answer>" + pad):
        assert len(resp) > 100_000
        _check(rewards.score(resp, gt, *task), "released")
    ok = rewards.score(f"<think>{pad}</think><answer>{VALID[task]}</answer>", gt, *task)
    assert ok.accuracy == 1.0 and ok.format == 1.0  # a long think does not hurt a correct answer


@pytest.mark.parametrize("task", TASKS, ids=lambda t: "/".join(t))
def test_correct_answer_scores_full(task: tuple[str, str]) -> None:
    r = rewards.score(
        f"<think>x</think><answer>{VALID[task]}</answer>", f"<answer>{VALID[task]}</answer>", *task
    )
    assert (r.accuracy, r.format, r.structure, r.overall) == (1.0, 1.0, 0.5, 1.5)
