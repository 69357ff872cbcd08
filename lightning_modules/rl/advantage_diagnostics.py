"""Per-task diagnostics of one step's advantages: the mechanism EMA-GRPO targets, made visible.

- ``mean_abs``: mean |A| over the task's rollouts.
- ``mass_share``: the task's share of the step's advantage mass Σ|A_i|·(response tokens of i), the
  first-order proxy for its share of the policy gradient (Dr.GRPO lets sparse 0/1 tasks dominate it).
- ``amplified``: the fraction of the task's groups whose rewards nearly tie (std < ``tie_std``) while
  their largest |A| exceeds ``amplified_above`` (GRPO's per-group std blows such groups up).

Pure tensors in, floats out; `GRPOModule` logs them as ``train/adv/<metric>/<task>`` and the
counterfactual ablation recomputes them for every estimator on recorded rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_modules.rl.advantages import group_statistics

TIE_STD = 0.05
AMPLIFIED_ABOVE = 1.0


def advantage_diagnostics(
    advantages: Tensor,
    rewards: Tensor,
    group_ids: Tensor,
    task_keys: Sequence[str],
    response_tokens: Tensor,
    tie_std: float = TIE_STD,
    amplified_above: float = AMPLIFIED_ABOVE,
) -> dict[str, dict[str, float]]:
    """``{task: {"mean_abs", "mass_share", "amplified"}}`` for one step (rows: rollouts; a group's
    rows share one task). The reward std of a group is the population std."""
    if not len(task_keys):
        return {}
    adv = advantages.detach().double().abs().cpu()
    tokens = response_tokens.detach().double().cpu()
    stats = group_statistics(rewards.detach().double().cpu(), group_ids.cpu())
    max_abs = torch.zeros(stats.num_groups, dtype=torch.float64).scatter_reduce(0, stats.index, adv, "amax")
    amplified = (stats.pop_std < tie_std) & (max_abs > amplified_above)
    mass = adv * tokens
    total = float(mass.sum())
    out: dict[str, dict[str, float]] = {}
    for key in dict.fromkeys(task_keys):
        rows = torch.tensor([k == key for k in task_keys])
        groups = torch.unique(stats.index[rows])
        out[key] = {
            "mean_abs": float(adv[rows].mean()),
            "mass_share": float(mass[rows].sum()) / total if total > 0 else 0.0,
            "amplified": float(amplified[groups].double().mean()),
        }
    return out
