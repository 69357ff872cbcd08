"""Task registry: `@register_reward(problem_type, data_type=...)` maps a task to its reward parts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AccuracyFn",
    "StructureFn",
    "AnswerCheck",
    "TaskReward",
    "UnknownTaskError",
    "register_reward",
    "get_reward",
    "check_tasks",
    "registered_tasks",
    "unregister_reward",
    "VARIANTS",
]

VARIANTS = ("released", "paper")


class AccuracyFn(Protocol):
    """Accuracy in [0, 1] of a predicted answer against the tag-stripped ground truth."""

    def __call__(self, pred: str, gt: str, variant: str) -> float: ...


StructureFn = Callable[[str, str], float]
"""(answer inside the tags, ground truth) -> structure bonus; applied only when format is 1."""

AnswerCheck = Callable[[str], "str | None"]
"""Ground-truth validator: a reason string when the ground truth is malformed, else None."""


class UnknownTaskError(KeyError):
    """A (problem_type, data_type) pair with no registered reward."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown task"


@dataclass(frozen=True)
class TaskReward:
    """Everything needed to score one task."""

    problem_type: str
    data_type: str | None  # None: any data type
    accuracy: AccuracyFn
    structure: StructureFn
    check_answer: AnswerCheck


_REGISTRY: dict[tuple[str, str | None], TaskReward] = {}


def _key(s: str | None) -> str | None:
    return None if s is None else str(s).strip().lower()


def _no_check(gt: str) -> str | None:
    return None if gt.strip() else "empty answer"


def register_reward(
    problem_type: str,
    *,
    data_type: str | None = None,
    structure: float | StructureFn = 0.5,
    check_answer: AnswerCheck | None = None,
    replace: bool = False,
) -> Callable[[AccuracyFn], AccuracyFn]:
    """Decorator registering an accuracy function for `problem_type` (and `data_type`, None = any).

    `structure` is a constant bonus (released default 0.5 for free-form tasks) or a function.
    `check_answer` validates the ground truth (default: non-empty).
    """
    pt, dt = _key(problem_type), _key(data_type)
    if not pt:
        raise ValueError("problem_type must be a non-empty string")
    if isinstance(structure, (int, float)):
        bonus = float(structure)

        def structure_fn(answer: str, gt: str) -> float:
            return bonus
    else:
        structure_fn = structure

    def deco(fn: AccuracyFn) -> AccuracyFn:
        if (pt, dt) in _REGISTRY and not replace:
            raise ValueError(f"reward for {(pt, dt)} is already registered; pass replace=True")
        _REGISTRY[(pt, dt)] = TaskReward(pt, dt, fn, structure_fn, check_answer or _no_check)
        return fn

    return deco


def unregister_reward(problem_type: str, data_type: str | None = None) -> None:
    """Remove a registration (mainly for tests)."""
    _REGISTRY.pop((_key(problem_type), _key(data_type)), None)


def registered_tasks() -> list[tuple[str, str | None]]:
    """All registered (problem_type, data_type) pairs; data_type None means any."""
    return sorted(_REGISTRY, key=lambda k: (k[0], k[1] or ""))


def _describe() -> str:
    return ", ".join(f"{p}/{d or '*'}" for p, d in registered_tasks())


def get_reward(problem_type: str, data_type: str | None) -> TaskReward:
    """The reward for a task; raises UnknownTaskError listing what is registered."""
    pt, dt = _key(problem_type), _key(data_type)
    task = _REGISTRY.get((pt, dt)) or _REGISTRY.get((pt, None))
    if task is None:
        raise UnknownTaskError(
            f"no reward registered for problem_type={problem_type!r}, data_type={data_type!r}. "
            f"Registered: {_describe()}"
        )
    return task


def check_tasks(pairs: Iterable[tuple[str, str | None]]) -> None:
    """Fail fast at configuration time if any (problem_type, data_type) pair is unknown."""
    missing = sorted({(p, d) for p, d in pairs if _lookup_ok(p, d) is False}, key=str)
    if missing:
        raise UnknownTaskError(
            f"no reward registered for {', '.join(f'{p!r}/{d!r}' for p, d in missing)}. "
            f"Registered: {_describe()}"
        )


def _lookup_ok(problem_type: str, data_type: str | None) -> bool:
    pt, dt = _key(problem_type), _key(data_type)
    return (pt, dt) in _REGISTRY or (pt, None) in _REGISTRY


def check_variant(variant: str) -> None:
    """Raise ValueError for an unknown reward variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; choose one of {VARIANTS}")
