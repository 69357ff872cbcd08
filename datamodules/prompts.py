"""The user turn of the released OneThinker models (SPEC §3), built from the shipped template strings."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

from datamodules.records import PLACEHOLDERS
from datamodules.tasks import template_key


class PromptFields(Protocol):
    problem: str
    problem_type: str
    data_type: str
    options: tuple[str, ...]


@lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    """The released prompt strings (``prompt_templates.json``, shipped unchanged in the package)."""
    text = resources.files("datamodules").joinpath("prompt_templates.json").read_text(encoding="utf-8")
    return json.loads(text)


def format_user_turn(
    problem: str, problem_type: str, data_type: str, options: tuple[str, ...] | list[str] = ()
) -> str:
    """question_template(problem [+ options]) + the type template, exactly as the released code."""
    question = problem
    if problem_type == "multiple choice" and options:
        question += "\nOptions:\n" + "\n".join(options)
    t = templates()
    # str.replace, not str.format: problems may contain braces (JSON, LaTeX).
    return (
        t["question_template"].replace("{Question}", question)
        + t["type_templates"][template_key(problem_type, data_type)]
    )


def build_prompt(record: PromptFields) -> str:
    """The full user-turn text; a `<image>` / `<video>` placeholder stays where the record has it.

    SFT records carry their user turn verbatim, so it is returned as it is.
    """
    if hasattr(record, "messages"):
        return record.messages[0].content
    return format_user_turn(record.problem, record.problem_type, record.data_type, record.options)


def sft_user_content(
    problem: str, problem_type: str, data_type: str, options: tuple[str, ...] | list[str] = ()
) -> str:
    """User content of an SFT record: the media placeholder, then the built prompt (SPEC §2)."""
    return PLACEHOLDERS[data_type] + format_user_turn(problem, problem_type, data_type, options)


def assistant_turn(record: Any) -> str:
    """The assistant content an SFT record trains on."""
    return record.messages[-1].content


_SPLIT = re.compile("(<image>|<video>)")


def split_content(text: str) -> list[dict[str, str]]:
    """Chat content parts: text pieces and one ``{"type": "image"|"video"}`` per placeholder.

    A text with no placeholder and media elsewhere gets its media first, as SFT records do.
    """
    parts: list[dict[str, str]] = []
    for piece in _SPLIT.split(text):
        if piece in ("<image>", "<video>"):
            parts.append({"type": piece[1:-1]})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def infer_problem_type(user_text: str) -> str | None:
    """The problem type whose released type template ends ``user_text``, if any."""
    for key, suffix in templates()["type_templates"].items():
        if user_text.endswith(suffix):
            return "segmentation" if key.startswith("segmentation_") else key
    return None
