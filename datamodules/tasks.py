"""Task vocabulary of OneThinker (SPEC §1): problem types, data types and the RL mix groups."""

from __future__ import annotations

from typing import Literal

TaskKeyMode = Literal["task", "task_modality", "benchmark"]

PROBLEM_TYPES: tuple[str, ...] = (
    "multiple choice",
    "numerical",
    "regression",
    "OCR",
    "math",
    "open-ended",
    "temporal grounding",
    "spatial grounding",
    "spatial-temporal grounding",
    "tracking",
    "segmentation",
)
DATA_TYPES: tuple[str, ...] = ("image", "video")
RULE_BASED_QA: frozenset[str] = frozenset({"multiple choice", "numerical", "regression", "OCR", "math"})
QA_TYPES: frozenset[str] = RULE_BASED_QA | {"open-ended"}  # answered in text, scored by the QA rewards

# SPEC §4: RL data mix by group.
MIX_GROUPS: dict[str, float] = {
    "rule-based QA": 0.55,
    "open-ended QA and captions": 0.13,
    "temporal grounding": 0.14,
    "spatial grounding": 0.05,
    "spatio-temporal grounding": 0.03,
    "tracking": 0.05,
    "segmentation": 0.05,
}


def mix_group(problem_type: str) -> str:
    """The RL data-mix group (SPEC §4) a problem type belongs to."""
    if problem_type in RULE_BASED_QA:
        return "rule-based QA"
    if problem_type == "open-ended":
        return "open-ended QA and captions"
    if problem_type == "spatial-temporal grounding":
        return "spatio-temporal grounding"
    if problem_type in PROBLEM_TYPES:
        return problem_type
    raise ValueError(f"unknown problem_type {problem_type!r}; valid: {', '.join(PROBLEM_TYPES)}")


def template_key(problem_type: str, data_type: str) -> str:
    """Key into the released type templates; segmentation splits by modality."""
    if problem_type == "segmentation":
        return f"segmentation_{data_type}"
    return problem_type


def task_key(problem_type: str, data_type: str, by: TaskKeyMode = "task") -> str:
    """The one name of a task, in three granularities.

    ``task`` (the released EMA key τ): ``problem_type``, except segmentation, which is split by
    modality into ``segmentation/image`` and ``segmentation/video``. ``task_modality``: every task is
    ``problem_type/data_type`` (SFT losses, skip counts). ``benchmark`` (metrics.json): QA and
    segmentation split by modality; grounding and tracking, whose modality the task fixes, are not.
    """
    if by == "task_modality":
        return f"{problem_type}/{data_type}"
    if by == "task":
        return f"{problem_type}/{data_type}" if problem_type == "segmentation" else problem_type
    if by == "benchmark":
        split = problem_type in QA_TYPES or problem_type == "segmentation"
        return f"{problem_type}/{data_type}" if split else problem_type
    raise ValueError(f"task_key: by must be 'task', 'task_modality' or 'benchmark', got {by!r}")
