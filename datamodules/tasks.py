"""Task vocabulary of OneThinker (SPEC §1): problem types, data types and the RL mix groups."""

from __future__ import annotations

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
