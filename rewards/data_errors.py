"""Malformed ground truth is a data error: reported once per record, counted, never silently 0."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Literal

__all__ = [
    "RewardDataError",
    "OnBadAnswer",
    "report_data_error",
    "data_error_counts",
    "guarded_error_counts",
    "count_guarded_error",
    "reset_counters",
]

logger = logging.getLogger("rewards")
OnBadAnswer = Literal["warn", "raise"]

_lock = threading.Lock()
_data_errors: Counter[str] = Counter()
_guarded: Counter[str] = Counter()
_seen: set[Any] = set()
_MAX_SEEN = 1_000_000  # forget old records rather than grow forever


class RewardDataError(ValueError):
    """A ground-truth answer that cannot be scored as its task requires."""

    def __init__(
        self, problem_type: str, data_type: str, reason: str, problem_id: Any = None, answer: str = ""
    ) -> None:
        self.problem_type, self.data_type, self.reason = problem_type, data_type, reason
        self.problem_id, self.answer = problem_id, answer
        super().__init__(
            f"malformed ground truth (problem_id={problem_id!r}, {problem_type}/{data_type}): {reason}; "
            f"answer={answer[:120]!r}"
        )


def report_data_error(err: RewardDataError, on_bad_answer: OnBadAnswer = "warn") -> None:
    """Raise, or log once per record (keyed by problem_id, else the answer text) and count."""
    if on_bad_answer == "raise":
        raise err
    key = (
        err.problem_type,
        err.data_type,
        ("id", err.problem_id) if err.problem_id is not None else ("answer", err.answer),
    )
    with _lock:
        if key in _seen:
            return
        if len(_seen) >= _MAX_SEEN:
            _seen.clear()
        _seen.add(key)
        _data_errors[f"{err.problem_type}/{err.data_type}"] += 1
    logger.warning("%s", err)


def count_guarded_error(task: str, exc: BaseException) -> None:
    """Count (and log at debug level) an exception a reward function should not have raised."""
    with _lock:
        _guarded[task] += 1
    logger.debug("reward for %s raised %r; scored 0", task, exc)


def data_error_counts() -> dict[str, int]:
    """Malformed-ground-truth records seen, per `problem_type/data_type`."""
    with _lock:
        return dict(_data_errors)


def guarded_error_counts() -> dict[str, int]:
    """Exceptions caught around reward functions, per task (built-ins should keep this empty)."""
    with _lock:
        return dict(_guarded)


def reset_counters() -> None:
    """Forget all counts and seen records."""
    with _lock:
        _data_errors.clear()
        _guarded.clear()
        _seen.clear()
