"""Held-out outcomes of an ablation: each run's last evaluation on the fixed evaluation manifest
(``val/reward/overall/<task>`` greedy, ``val/sampled_reward/overall/<task>`` sampled), summarised per
estimator and task as a mean with a 95% t-interval over seeds, and as a paired difference against a
reference estimator (EMA-GRPO) on the seeds both ran.

Enable the evaluation in the ablated recipe, e.g. ``-- --trainer.limit_val_batches=1.0
--trainer.val_check_interval=8`` (every 8 RL steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from experiments.ablate import ALL_TASKS, _task_order, collect_curves

HELD_OUT = ("val/reward/overall", "val/sampled_reward/overall")


def interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and the two-sided t-interval of the mean (``lo == hi == mean`` for one value)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "lo": mean, "hi": mean, "n": len(x)}
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(x)}


def last_values(
    curves: dict[str, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]],
) -> dict[str, dict[str, dict[int, float]]]:
    """``{advantage: {task: {seed: the run's last held-out value}}}``."""
    return {
        advantage: {
            task: {seed: float(v[-1]) for seed, (_, v) in by_seed.items() if len(v)}
            for task, by_seed in tasks.items()
        }
        for advantage, tasks in curves.items()
    }


def outcome_summary(
    run_dirs: dict[tuple[str, int], Path], metric: str, reference: str = "ema_grpo"
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {advantage: {"mean", "lo", "hi", "n", "paired": {...} | None}}}`` from the runs' last
    held-out values; ``paired`` is the interval of (advantage − reference) over the common seeds."""
    finals = last_values(collect_curves(run_dirs, metric))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for advantage, tasks in finals.items():
        for task, by_seed in tasks.items():
            if not by_seed:
                continue
            cell: dict[str, Any] = interval(list(by_seed.values()))
            ref = finals.get(reference, {}).get(task, {})
            common = sorted(set(by_seed) & set(ref))
            cell["paired"] = (
                interval([by_seed[s] - ref[s] for s in common]) if advantage != reference and common else None
            )
            out.setdefault(task, {})[advantage] = cell
    return out


def outcome_table(
    summary: dict[str, dict[str, dict[str, Any]]],
    advantages: Sequence[str],
    metric: str,
    reference: str = "ema_grpo",
) -> str:
    lines = [
        f"## Held-out `{metric}` at the last evaluation",
        "",
        f"Mean [95% t-interval] over seeds; Δ: paired difference to {reference} on the same seeds "
        f"(an interval that excludes 0 separates the two). `{ALL_TASKS}`: every task pooled.",
        "",
        "| task | "
        + " | ".join(advantages)
        + " | "
        + " | ".join(f"Δ {a}" for a in advantages if a != reference)
        + " |",
        "|---|" + "---:|" * (len(advantages) + sum(a != reference for a in advantages)),
    ]
    fmt = lambda c: f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] (n={c['n']})"  # noqa: E731
    for task in _task_order(set(summary)):
        cells = summary[task]
        row = [fmt(cells[a]) if a in cells else "–" for a in advantages]
        row += [
            fmt(cells[a]["paired"]) if a in cells and cells[a]["paired"] else "–"
            for a in advantages
            if a != reference
        ]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_outcomes(run_dirs: dict[tuple[str, int], Path], out: Path, advantages: Sequence[str]) -> str | None:
    """``ablation_heldout.md`` with one table per held-out metric the runs logged (None: none did)."""
    parts = []
    for metric in HELD_OUT:
        summary = outcome_summary(run_dirs, metric)
        if summary:
            parts.append(outcome_table(summary, advantages, metric))
    if not parts:
        return None
    path = Path(out) / "ablation_heldout.md"
    path.write_text("# Held-out reward per estimator\n\n" + "\n".join(parts))
    return str(path)
