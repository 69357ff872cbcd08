"""The user turn must equal the released prompt text character for character (SPEC §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.prompts import (
    build_prompt,
    format_user_turn,
    infer_problem_type,
    sft_user_content,
    split_content,
)
from datamodules.records import validate_record
from tests.data.released_templates import QUESTION_TEMPLATE, TYPE_TEMPLATES

CASES = [
    ("multiple choice", "image"),
    ("numerical", "image"),
    ("OCR", "image"),
    ("open-ended", "video"),
    ("regression", "video"),
    ("math", "image"),
    ("temporal grounding", "video"),
    ("spatial grounding", "image"),
    ("spatial-temporal grounding", "video"),
    ("tracking", "video"),
    ("segmentation", "image"),
    ("segmentation", "video"),
]


def _record(problem_type: str, data_type: str, problem: str, options: list[str]):
    tag = "<image>" if data_type == "image" else "<video>"
    raw = {
        "problem_id": 7,
        "problem": problem,
        "data_type": data_type,
        "problem_type": problem_type,
        "options": options,
        "data_source": "unit",
        "answer": "<answer>x</answer>",
        f"{data_type}s": ["m"] if tag in problem else [],
    }
    return validate_record(raw, "rl", path="t.json", where="record 0", index=0, media_root=Path("."))


def test_twelve_template_keys_covered():
    keys = {("segmentation_" + d) if p == "segmentation" else p for p, d in CASES}
    assert keys == set(TYPE_TEMPLATES) and len(keys) == 12


@pytest.mark.parametrize(("problem_type", "data_type"), CASES)
def test_prompt_matches_released_text(problem_type: str, data_type: str):
    key = f"segmentation_{data_type}" if problem_type == "segmentation" else problem_type
    tag = "<image>" if data_type == "image" else "<video>"
    problem = f"{tag}Where is the {{red}} ball?"
    options = ["A. left", "B. right"] if problem_type == "multiple choice" else []
    question = problem + ("\nOptions:\nA. left\nB. right" if options else "")
    expected = QUESTION_TEMPLATE.replace("{Question}", question) + TYPE_TEMPLATES[key]
    built = build_prompt(_record(problem_type, data_type, problem, options))
    assert built == expected
    assert built.startswith(tag)  # placeholder kept where the record has it
    assert infer_problem_type(built) == problem_type


def test_multiple_choice_options_spelled_out():
    text = format_user_turn("<image>Which?", "multiple choice", "image", ["A. cat", "B. dog", "C. cow"])
    assert text.startswith(
        "<image>Which?\nOptions:\nA. cat\nB. dog\nC. cow\nPlease answer this question based on the visual content.Provide"
    )
    assert text.endswith("Example:\n<answer>A</answer>")


def test_options_ignored_for_other_types():
    assert "Options:" not in format_user_turn("Q", "numerical", "image", ["A. 1"])


def test_released_missing_spaces_kept():
    text = format_user_turn("Q", "OCR", "image")
    assert "visual content.Provide your" in text and "</answer> tags.At the end" in text


def test_split_content_parts():
    parts = split_content("<image>left<image>right <video>")
    assert parts == [
        {"type": "image"},
        {"type": "text", "text": "left"},
        {"type": "image"},
        {"type": "text", "text": "right "},
        {"type": "video"},
    ]


def test_sft_user_content_starts_with_placeholder():
    content = sft_user_content("How many?", "numerical", "video")
    assert (
        content
        == "<video>" + QUESTION_TEMPLATE.replace("{Question}", "How many?") + TYPE_TEMPLATES["numerical"]
    )


def test_package_copy_is_the_released_file():
    shared = Path(__file__).resolve().parents[2] / "shared" / "onethinker" / "prompt_templates.json"
    if not shared.is_file():
        pytest.skip("shared/ not beside this checkout")
    from importlib import resources

    shipped = resources.files("datamodules").joinpath("prompt_templates.json").read_bytes()
    assert shipped == shared.read_bytes()
