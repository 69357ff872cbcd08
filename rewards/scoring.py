"""`score` and `score_batch`: strings in, `RewardResult` out."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import math
import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import qa
from .data_errors import OnBadAnswer, RewardDataError, count_guarded_error, report_data_error
from .format import format_reward
from .parsing import answer_for_accuracy, extract_answer, normalize_response, strip_ground_truth
from .registry import TaskReward, UnknownTaskError, check_variant, get_reward, registered_tasks
from .reward_model import RewardModelScorer, reward_model_accuracies
from .timeout import add_timeouts, timeouts

__all__ = ["RewardResult", "score", "score_batch", "combine", "shutdown_pools"]

FORMAT_WEIGHT = 0.1  # released: overall = 0.9·accuracy + 0.1·format + structure


REWARD_FIELDS: tuple[str, ...] = ("overall", "accuracy", "format", "structure")
"""The reward floats of a `RewardResult`, in logging order."""


@dataclass(frozen=True)
class RewardResult:
    """One response's reward. `answer_error` holds the reason when the ground truth is malformed."""

    overall: float
    accuracy: float
    format: float
    structure: float
    answer_error: str | None = None

    def as_dict(self) -> dict[str, float]:
        """The four reward floats, for logging."""
        return {name: getattr(self, name) for name in REWARD_FIELDS}


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def combine(accuracy: float, fmt: float, structure: float, variant: str) -> float:
    """released: 0.9·accuracy + 0.1·format + structure; paper: accuracy + format."""
    if variant == "paper":
        return accuracy + fmt
    return (1.0 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * fmt + structure


def _task_name(task: TaskReward) -> str:
    return f"{task.problem_type}/{task.data_type or '*'}"


def _score_task(task: TaskReward, response: Any, gt: str, variant: str) -> tuple[float, float, float, float]:
    """(overall, accuracy, format, structure) for a tag-stripped ground truth. Never raises."""
    norm = normalize_response(response)
    fmt = format_reward(norm)
    try:
        acc = _finite(task.accuracy(answer_for_accuracy(norm), gt, variant))
    except Exception as e:  # last-resort guard; built-in rewards do not raise
        count_guarded_error(_task_name(task), e)
        acc = 0.0
    struct = 0.0
    if fmt and variant == "released":
        try:
            struct = _finite(task.structure(extract_answer(norm), gt))
        except Exception as e:
            count_guarded_error(_task_name(task), e)
    return _finite(combine(acc, fmt, struct, variant)), acc, fmt, struct


def _check_answer(task: TaskReward, gt: str, problem_id: Any, on_bad_answer: OnBadAnswer) -> str | None:
    try:
        # empty tags leave the tagged text as the ground truth (released), never a valid answer
        reason = (
            "empty <answer> tags" if "<answer>" in gt and not extract_answer(gt) else task.check_answer(gt)
        )
    except Exception as e:
        reason = f"answer check raised {e!r}"
    if reason:
        report_data_error(
            RewardDataError(task.problem_type, task.data_type or "*", reason, problem_id, gt), on_bad_answer
        )
    return reason


def score(
    response: str,
    answer: str,
    problem_type: str,
    data_type: str,
    *,
    variant: str = "released",
    problem_id: Any = None,
    on_bad_answer: OnBadAnswer = "warn",
) -> RewardResult:
    """Score one response against its ground truth (`answer`, tags included).

    Raises UnknownTaskError for an unregistered task (a configuration error), and RewardDataError
    for a malformed ground truth only when `on_bad_answer="raise"`; never for any model output.
    """
    check_variant(variant)
    task = get_reward(problem_type, data_type)
    gt = strip_ground_truth(answer)
    reason = _check_answer(task, gt, problem_id, on_bad_answer)
    return RewardResult(*_score_task(task, response, gt, variant), answer_error=reason)


# ---------------- batches ----------------

_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}


def _init_worker(math_timeout: float | None, modules: list[str]) -> None:
    qa.set_math_timeout(math_timeout)
    for name in modules:  # modules that register user rewards
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _score_chunk(items: list[tuple[Any, str, str, str]], variant: str) -> list[tuple | None]:
    out: list[tuple | None] = []
    for response, gt, pt, dt in items:
        try:
            task = get_reward(pt, dt)
        except UnknownTaskError:  # registered only in the parent (e.g. in __main__)
            out.append(None)
            continue
        out.append(_score_task(task, response, gt, variant))
    return out


def _score_chunk_in_worker(
    items: list[tuple[Any, str, str, str]], variant: str
) -> tuple[list[tuple | None], dict[str, int]]:
    """`_score_chunk` in a pool worker, with the time-outs it met (the parent adds them to its own)."""
    before = timeouts()
    scored = _score_chunk(items, variant)
    return scored, {k: n - before.get(k, 0) for k, n in timeouts().items() if n > before.get(k, 0)}


def _pool(workers: int, context: str) -> ProcessPoolExecutor:
    key = (workers, context)
    if key not in _POOLS:
        modules = sorted(
            {getattr(get_reward(p, d).accuracy, "__module__", "") for p, d in registered_tasks()}
            - {"__main__", ""}
        )
        _POOLS[key] = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context(context),
            initializer=_init_worker,
            initargs=(qa.get_math_timeout(), modules),
        )
    return _POOLS[key]


@atexit.register
def shutdown_pools() -> None:
    """Shut down the worker pools of `score_batch`."""
    for ex in _POOLS.values():
        ex.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


def score_batch(
    responses: Sequence[str],
    answers: Sequence[str],
    problem_types: Sequence[str],
    data_types: Sequence[str],
    *,
    variant: str = "released",
    workers: int = 0,
    problem_ids: Sequence[Any] | None = None,
    prompts: Sequence[str] | None = None,
    reward_model: RewardModelScorer | None = None,
    normalize_reward_model: bool = True,
    on_bad_answer: OnBadAnswer = "warn",
    chunk_size: int = 64,
    mp_context: str = "forkserver",
) -> list[RewardResult]:
    """Score a batch. `workers > 0` fans chunks out to a persistent process pool.

    With `reward_model`, open-ended accuracy comes from it (ROUGE where it fails), min-max
    normalized within each `problem_ids` group as in the released POLAR setup.
    """
    check_variant(variant)
    n = len(responses)
    for name, seq in (
        ("answers", answers),
        ("problem_types", problem_types),
        ("data_types", data_types),
        ("problem_ids", problem_ids),
        ("prompts", prompts),
    ):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} items, responses has {n}")
    tasks = {pair: get_reward(*pair) for pair in set(zip(problem_types, data_types))}  # fail fast
    gts = [strip_ground_truth(a) for a in answers]
    reasons: list[str | None] = []
    checked: dict[tuple, str | None] = {}
    for i in range(n):
        task = tasks[(problem_types[i], data_types[i])]
        pid = problem_ids[i] if problem_ids is not None else None
        key = (task.problem_type, task.data_type, gts[i], pid)
        if key not in checked:
            checked[key] = _check_answer(task, gts[i], pid, on_bad_answer)
        reasons.append(checked[key])

    items = [(responses[i], gts[i], problem_types[i], data_types[i]) for i in range(n)]
    if workers > 0 and n > chunk_size:
        chunks = [items[i : i + chunk_size] for i in range(0, n, chunk_size)]
        ex = _pool(workers, mp_context)
        parts: list[tuple | None] = []
        for scored, timed_out in ex.map(_score_chunk_in_worker, chunks, [variant] * len(chunks)):
            parts += scored
            add_timeouts(timed_out)
    else:
        parts = _score_chunk(items, variant)
    rows = [
        list(p) if p is not None else list(_score_task(tasks[(it[2], it[3])], it[0], it[1], variant))
        for p, it in zip(parts, items)
    ]

    if reward_model is not None:
        idx = [i for i in range(n) if tasks[(problem_types[i], data_types[i])].problem_type == "open-ended"]
        if idx:
            accs = reward_model_accuracies(
                reward_model,
                [prompts[i] if prompts is not None else "" for i in idx],
                [gts[i] for i in idx],
                [extract_answer(normalize_response(responses[i])) for i in idx],
                [problem_ids[i] if problem_ids is not None else None for i in idx],
                normalize=normalize_reward_model,
            )
            for i, acc in zip(idx, accs):
                rows[i][1] = _finite(acc)
                rows[i][0] = _finite(combine(rows[i][1], rows[i][2], rows[i][3], variant))
    return [RewardResult(*r, answer_error=reason) for r, reason in zip(rows, reasons)]
