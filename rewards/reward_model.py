"""Optional reward model for open-ended answers (POLAR-7B in the paper), scored in batch."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .qa import rouge_accuracy

__all__ = [
    "RewardModelScorer",
    "OpenAIChatRewardScorer",
    "reward_model_accuracies",
    "normalize_by_group",
    "reward_model_failures",
    "JUDGE_TEMPLATE",
]

logger = logging.getLogger("rewards")

JUDGE_TEMPLATE = (
    "You are grading an answer against a reference answer.\n"
    "Question: {prompt}\nReference answer: {reference}\nAnswer to grade: {output}\n"
    "Rate how well the answer matches the reference in meaning, from 0 (wrong) to 10 (equivalent). "
    "Reply with the number only."
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

_fail_lock = threading.Lock()
_failures = 0


@runtime_checkable
class RewardModelScorer(Protocol):
    """Scores (prompt, reference, output) triples in one batch call.

    Returns one score per item (higher is better); None marks an item that failed. Raising
    fails the whole batch. Failed items fall back to ROUGE.
    """

    def score(
        self, prompts: Sequence[str], references: Sequence[str], outputs: Sequence[str]
    ) -> list[float | None]: ...


@dataclass
class OpenAIChatRewardScorer:
    """A judge behind any OpenAI-compatible `/chat/completions` endpoint (vLLM, ...).

    `url` is the API base, e.g. `http://127.0.0.1:8000/v1`. The reply's first number, divided by
    `max_score`, is the score.
    """

    url: str
    model: str
    api_key: str | None = None
    template: str = JUDGE_TEMPLATE
    max_score: float = 10.0
    timeout_s: float = 30.0
    concurrency: int = 16
    max_tokens: int = 8

    def _one(self, prompt: str, reference: str, output: str) -> float | None:
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": self.template.format(prompt=prompt, reference=reference, output=output),
                }
            ],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read().decode("utf-8", "replace"))
            text = reply["choices"][0]["message"]["content"]
            m = _NUMBER.search(text if isinstance(text, str) else "")
        except Exception as e:  # network, HTTP status, JSON shape: one failed item
            logger.debug("reward model request failed: %r", e)
            return None
        if m is None:
            return None
        v = float(m.group(0)) / self.max_score
        return max(0.0, min(1.0, v)) if math.isfinite(v) else None

    def score(
        self, prompts: Sequence[str], references: Sequence[str], outputs: Sequence[str]
    ) -> list[float | None]:
        """Score all items, `concurrency` requests at a time."""
        with ThreadPoolExecutor(max(1, self.concurrency)) as ex:
            return list(ex.map(self._one, prompts, references, outputs))


def normalize_by_group(scores: Sequence[float], groups: Sequence[Any]) -> list[float]:
    """Released POLAR normalization per group: z-score, then min-max; a constant group becomes 1."""
    out = [0.0] * len(scores)
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        vals = np.array([scores[i] for i in idx], dtype=np.float32)
        std = vals.std()
        if std == 0:
            norm = np.ones_like(vals)
        else:
            z = (vals - vals.mean()) / (std + 1e-6)
            norm = (z - z.min()) / (z.max() - z.min() + 1e-12)
        for i, v in zip(idx, norm):
            out[i] = float(v)
    return out


def reward_model_failures() -> int:
    """Items that fell back to ROUGE since start-up."""
    return _failures


def reward_model_accuracies(
    scorer: RewardModelScorer,
    prompts: Sequence[str],
    references: Sequence[str],
    outputs: Sequence[str],
    groups: Sequence[Any],
    *,
    normalize: bool = True,
) -> list[float]:
    """Reward-model accuracies in [0, 1], ROUGE for failed items, optionally normalized per group."""
    global _failures
    try:
        raw = list(scorer.score(prompts, references, outputs))
        if len(raw) != len(outputs):
            raise ValueError(f"reward model returned {len(raw)} scores for {len(outputs)} items")
    except Exception as e:
        logger.warning("reward model batch failed (%r); using ROUGE for %d items", e, len(outputs))
        raw = [None] * len(outputs)
    scores: list[float] = []
    failed = 0
    for r, ref, out in zip(raw, references, outputs):
        try:
            v = float(r) if r is not None else math.nan
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            failed += 1
            v = rouge_accuracy(ref, out)
        scores.append(v)
    if failed:
        with _fail_lock:
            _failures += failed
        logger.warning(
            "reward model failed on %d of %d items; ROUGE used instead (total %d)",
            failed,
            len(outputs),
            _failures,
        )
    if normalize:
        scores = normalize_by_group(scores, groups)
    return [max(0.0, min(1.0, s)) for s in scores]
