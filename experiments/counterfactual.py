"""The counterfactual ablation: every estimator recomputed on the same recorded rollouts.

Each run of `onethinker ablate` records, per RL step, its kept groups' task keys, rewards and response
lengths (callbacks/reward_record.py). Here GRPO, Dr.GRPO and EMA-GRPO are recomputed on exactly
those rewards (EMA-GRPO's statistics replayed step by step from the run's first recorded state), and
each estimator's per-task advantage-mass share and amplified-group fraction are averaged over the
steps. Sampling noise is the same for all three, so differences are the estimators' own.

    onethinker ablate --counterfactual true --out outputs/ablation [--advantages ...] [--seeds ...]
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from callbacks.reward_record import RECORD_FILE
from lightning_modules.rl.advantage_diagnostics import advantage_diagnostics
from lightning_modules.rl.advantages import AdvantageResult, Estimator, TaskRewardEMA, compute_advantages

ESTIMATORS: tuple[Estimator, ...] = ("grpo", "dr_grpo", "ema_grpo")  # the ablation's order
DIAGNOSTICS = ("mass_share", "amplified", "mean_abs")


class CounterfactualError(ValueError):
    """A run that cannot be analysed (no records, missing run)."""


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's step records, one per step (a resumed run's re-recorded step keeps its last line),
    in step order. An unfinished last line (a crash) is skipped with a warning."""
    found = sorted(Path(run_dir).rglob(RECORD_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CounterfactualError(
            f"ablate --counterfactual: run {run_dir} has no {RECORD_FILE}; add "
            "callbacks.reward_record.RewardRecordCallback to its trainer callbacks and rerun it"
        )
    by_step: dict[int, dict[str, Any]] = {}
    bad = 0
    for line in found[-1].read_text().splitlines():
        try:
            record = json.loads(line)
            by_step[int(record["step"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
    if bad:
        warnings.warn(f"ablate --counterfactual: {found[-1]}: {bad} unreadable line(s) skipped", stacklevel=2)
    if not by_step:
        raise CounterfactualError(f"ablate --counterfactual: run {run_dir}: {found[-1]} holds no step record")
    return [by_step[s] for s in sorted(by_step)]


def _inputs(record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    groups = record["groups"]
    rewards = torch.tensor([r for g in groups for r in g["overall"]], dtype=torch.float32)
    group_ids = torch.tensor([i for i, g in enumerate(groups) for _ in g["overall"]])
    keys = [g["key"] for g in groups for _ in g["overall"]]
    tokens = torch.tensor([t for g in groups for t in g["tokens"]], dtype=torch.float64)
    return rewards, group_ids, keys, tokens


def _ema(state: dict[str, Any] | None) -> TaskRewardEMA:
    if state is None:
        return TaskRewardEMA(sync_dist=False)
    ema = TaskRewardEMA(decay=state["decay"], min_std=state["min_std"], sync_dist=False)
    ema.load_state_dict(state)
    return ema


def replay(
    records: list[dict[str, Any]], estimator: str
) -> list[tuple[AdvantageResult, dict[str, dict[str, float]]]]:
    """``estimator``'s advantages and per-task diagnostics at every recorded step. EMA-GRPO's statistics
    start from the first record's EMA state (a fresh EMA if the run kept none) and are updated with
    each step's rewards, as the run itself would have."""
    ema = _ema(records[0].get("ema_before")) if estimator == "ema_grpo" else None
    out = []
    for record in records:
        rewards, group_ids, keys, tokens = _inputs(record)
        result = compute_advantages(
            estimator,
            rewards,
            group_ids,
            keys,
            ema,
            record.get("guard", 5.0),
            record.get("guard_mode", "fallback"),
        )
        out.append((result, advantage_diagnostics(result.advantages, rewards, group_ids, keys, tokens)))
    return out


def own_estimator_gap(records: list[dict[str, Any]]) -> float:
    """Largest |recomputed − recorded| advantage when the run's own estimator is replayed (≈ 0)."""
    estimator = records[0]["estimator"]
    gap = 0.0
    for record, (result, _) in zip(records, replay(records, estimator)):
        recorded = torch.tensor(record["advantages"], dtype=torch.float64)
        gap = max(
            gap, float((result.advantages.double() - recorded).abs().max()) if recorded.numel() else 0.0
        )
    return gap


def summarize_runs(run_dirs: dict[tuple[str, int], Path], estimators=ESTIMATORS) -> dict[str, Any]:
    """``{"shares": {estimator: {task: {diagnostic: mean}}}, "steps": n, "own_gap": {run: gap}}``,
    each mean over every recorded step (of every run) that had the task."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {
        e: defaultdict(lambda: defaultdict(list)) for e in estimators
    }
    own_gap, steps = {}, 0
    for (advantage, seed), run_dir in sorted(run_dirs.items()):
        records = read_records(run_dir)
        steps += len(records)
        own_gap[f"{advantage}/seed{seed}"] = own_estimator_gap(records)
        for estimator in estimators:
            for _, diagnostics in replay(records, estimator):
                for task, d in diagnostics.items():
                    for name in DIAGNOSTICS:
                        values[estimator][task][name].append(d[name])
    shares = {
        e: {task: {name: float(np.mean(v)) for name, v in d.items()} for task, d in sorted(per_task.items())}
        for e, per_task in values.items()
    }
    return {"shares": shares, "steps": steps, "own_gap": own_gap}


def markdown_table(summary: dict[str, Any], name: str = "") -> str:
    shares = summary["shares"]
    estimators = list(shares)
    tasks = sorted({t for per_task in shares.values() for t in per_task})
    head = f"# Counterfactual advantages{': ' + name if name else ''}\n\n"
    head += (
        f"All estimators recomputed on the same recorded rewards ({summary['steps']} RL steps over "
        f"{len(summary['own_gap'])} runs). Share: the task's share of Σ|A|·tokens, mean over the steps "
        "that had the task. Amplified: groups with reward std < 0.05 and max |A| > 1.\n\n"
    )
    cols = " | ".join(f"{e} share | {e} amplified" for e in estimators)
    lines = [f"| task | {cols} |", "|---|" + "---:|" * (2 * len(estimators))]
    for task in tasks:
        cells = []
        for e in estimators:
            d = shares[e].get(task)
            cells += [f"{d['mass_share']:.3f}", f"{d['amplified']:.3f}"] if d else ["–", "–"]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    gaps = ", ".join(f"{run} {gap:.1e}" for run, gap in summary["own_gap"].items())
    return (
        head
        + "\n".join(lines)
        + f"\n\nReplaying each run's own estimator reproduces its advantages (max |gap|): {gaps}.\n"
    )


def plot_shares(summary: dict[str, Any], path: str | Path) -> Path:
    """Stacked per-task advantage-mass shares, one bar per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = summary["shares"]
    estimators = list(shares)
    tasks = sorted({t for per_task in shares.values() for t in per_task})
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(estimators), 4.5))
    bottom = np.zeros(len(estimators))
    for task in tasks:
        raw = np.array([shares[e].get(task, {}).get("mass_share", 0.0) for e in estimators])
        ax.bar(estimators, raw, bottom=bottom, label=task)
        bottom += raw
    ax.set_ylabel("mean share of Σ|A|·tokens")
    ax.set_title("Advantage mass per task, same rollouts")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_counterfactual(
    out: str | Path, advantages: list[str], seeds: list[int], name: str = ""
) -> dict[str, Any]:
    """Analyse ``<out>/<advantage>/seed<seed>`` for every advantage × seed; write the table and plot."""
    out = Path(out)
    run_dirs = {}
    for advantage in advantages:
        for seed in seeds:
            run_dir = out / advantage / f"seed{seed}"
            if not run_dir.is_dir():
                raise CounterfactualError(
                    f"ablate --counterfactual: run {advantage} seed {seed} is missing ({run_dir})"
                )
            run_dirs[(advantage, seed)] = run_dir
    summary = summarize_runs(run_dirs)
    table = out / "counterfactual_table.md"
    table.write_text(markdown_table(summary, name))
    plot = plot_shares(summary, out / "counterfactual_shares.png")
    (out / "counterfactual.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "table": str(table), "plot": str(plot)}
