"""Held-out outcomes of an ablation: each run's last evaluation on the fixed evaluation manifest
(``val/reward/overall/<task>`` greedy, ``val/sampled_reward/overall/<task>`` sampled), summarised per
estimator and task as a mean with a 95% t-interval over seeds, and as a paired difference against a
reference estimator (EMA-GRPO) on the seeds both ran.

Enable the evaluation in the ablated recipe, e.g. ``-- --trainer.limit_val_batches=1.0
--trainer.val_check_interval=8`` (every 8 RL steps). With the starting model evaluated per seed
(``ablate --evaluate_start true``), each estimator's gain over it is reported too, paired on the seed (the
sampled evaluation draws with the run's seed), and the held-out curves start from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from experiments.ablate import ALL_TASKS, START, Curves, _task_order, collect_curves, plot_curves

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
    curves: dict[str, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]], at_step: int | None = None
) -> dict[str, dict[str, dict[int, float]]]:
    """``{advantage: {task: {seed: the run's last held-out value}}}`` (at or before ``at_step`` if set;
    a run with no evaluation by then is left out)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for advantage, tasks in curves.items():
        out[advantage] = {}
        for task, by_seed in tasks.items():
            values = {}
            for seed, (steps, v) in by_seed.items():
                upto = v if at_step is None else v[steps <= at_step]
                if len(upto):
                    values[seed] = float(upto[-1])
            out[advantage][task] = values
    return out


def _differences(values: dict[int, float], base: dict[int, float]) -> dict[str, float] | None:
    common = sorted(set(values) & set(base))
    return interval([values[s] - base[s] for s in common]) if common else None


def outcome_summary(
    run_dirs: dict[tuple[str, int], Path],
    metric: str,
    reference: str = "ema_grpo",
    start_runs: dict[int, Path] | None = None,
    at_step: int | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task: {advantage: {"mean", "lo", "hi", "n", "paired", "gain"}}}`` from the runs' last held-out
    values (at or before the logged step ``at_step``, if set); ``paired`` is the interval of (advantage − reference) over the common seeds, ``gain`` that of
    (advantage − starting model) (``None`` without a common seed). The starting model itself is the
    entry ``start``."""
    finals = last_values(collect_curves(run_dirs, metric), at_step)
    starts = last_values(collect_curves({(START, s): d for s, d in (start_runs or {}).items()}, metric))
    start = starts.get(START, {})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, by_seed in start.items():
        if by_seed:
            out.setdefault(task, {})[START] = {
                **interval(list(by_seed.values())),
                "paired": None,
                "gain": None,
            }
    for advantage, tasks in finals.items():
        for task, by_seed in tasks.items():
            if not by_seed:
                continue
            ref = finals.get(reference, {}).get(task, {})
            out.setdefault(task, {})[advantage] = {
                **interval(list(by_seed.values())),
                "paired": _differences(by_seed, ref) if advantage != reference else None,
                "gain": _differences(by_seed, start.get(task, {})),
            }
    return out


def outcome_table(
    summary: dict[str, dict[str, dict[str, Any]]],
    advantages: Sequence[str],
    metric: str,
    reference: str = "ema_grpo",
    at_step: int | None = None,
) -> str:
    with_start = any(START in cells for cells in summary.values())
    others = [a for a in advantages if a != reference]
    columns = [START] * with_start + list(advantages)
    headers = columns + [f"Δ {a}" for a in others] + [f"gain {a}" for a in advantages] * with_start
    lines = [
        f"## Held-out `{metric}` at the "
        + ("last evaluation" if at_step is None else f"last evaluation logged at step {at_step} or before"),
        "",
        f"Mean [95% t-interval] over seeds; Δ: paired difference to {reference} on the same seeds "
        f"(an interval that excludes 0 separates the two)"
        + ("; gain: paired difference to the starting model (`start`)" if with_start else "")
        + f". `{ALL_TASKS}`: every task pooled.",
        "",
        "| task | " + " | ".join(headers) + " |",
        "|---|" + "---:|" * len(headers),
    ]

    def fmt(cell: dict[str, Any] | None) -> str:
        return f"{cell['mean']:.3f} [{cell['lo']:.3f}, {cell['hi']:.3f}] (n={cell['n']})" if cell else "–"

    for task in _task_order(set(summary)):
        cells = summary[task]
        row = [fmt(cells.get(a)) for a in columns]
        row += [fmt(cells.get(a, {}).get("paired")) for a in others]
        row += [fmt(cells.get(a, {}).get("gain")) for a in advantages] * with_start
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def heldout_curves(run_dirs: dict[tuple[str, int], Path], metric: str, start_runs: dict[int, Path]) -> Curves:
    """Each run's held-out curve, starting from its seed's evaluation of the starting model (step 0)."""
    curves = collect_curves(run_dirs, metric)
    start = collect_curves({(START, s): d for s, d in start_runs.items()}, metric).get(START, {})
    for tasks in curves.values():
        for task, by_seed in tasks.items():
            for seed, (steps, values) in by_seed.items():
                if seed in start.get(task, {}):
                    s_steps, s_values = start[task][seed]
                    by_seed[seed] = (np.concatenate([[0], steps]), np.concatenate([s_values[-1:], values]))
    return curves


def write_outcomes(
    run_dirs: dict[tuple[str, int], Path],
    out: Path,
    advantages: Sequence[str],
    start_runs: dict[int, Path] | None = None,
    at_steps: Sequence[int] = (),
) -> str | None:
    """``ablation_heldout.md`` with one table per held-out metric the runs logged (at the last evaluation,
    then at each of ``at_steps``), and a plot of the held-out curves per metric
    (``ablation_heldout_<greedy|sampled>.png``); None when no run evaluated."""
    start_runs = start_runs or {}
    parts = []
    for metric, label in zip(HELD_OUT, ("greedy", "sampled")):
        summary = outcome_summary(run_dirs, metric, start_runs=start_runs)
        if not summary:
            continue
        parts.append(outcome_table(summary, advantages, metric))
        for step in at_steps:
            at = outcome_summary(run_dirs, metric, start_runs=start_runs, at_step=step)
            parts.append(outcome_table(at, advantages, metric, at_step=step))
        plot_curves(
            heldout_curves(run_dirs, metric, start_runs),
            Path(out) / f"ablation_heldout_{label}.png",
            advantages,
            title=f"held-out {metric} per task, mean over seeds (band: min–max; step 0: the starting model)",
        )
    if not parts:
        return None
    path = Path(out) / "ablation_heldout.md"
    path.write_text("# Held-out reward per estimator\n\n" + "\n".join(parts))
    return str(path)
