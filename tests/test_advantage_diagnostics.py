"""`advantage_diagnostics` on hand-built rewards: one sparse task (0/1) and one dense task (0.80–0.87),
two groups of four rollouts each, ten response tokens per rollout."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.rl.advantage_diagnostics import advantage_diagnostics
from lightning_modules.rl.advantages import EPS, TaskRewardEMA, compute_advantages

SPARSE = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
DENSE = [0.80, 0.82, 0.85, 0.87, 0.81, 0.83, 0.84, 0.86]
REWARDS = torch.tensor(SPARSE + DENSE, dtype=torch.float64)
GROUPS = torch.arange(4).repeat_interleave(4)
KEYS = ["sparse"] * 8 + ["dense"] * 8
TOKENS = torch.full((16,), 10.0)


def deviation_sums() -> dict[str, float]:
    """Σ|r − group mean| per task, by hand: sparse 1.5 + 2.0; dense 0.10 + 0.06."""
    return {"sparse": 1.5 + 2.0, "dense": (0.035 + 0.015 + 0.015 + 0.035) + (0.025 + 0.005 + 0.005 + 0.025)}


def diagnostics(estimator: str, ema: TaskRewardEMA | None = None):
    result = compute_advantages(estimator, REWARDS, GROUPS, KEYS, ema)
    return result, advantage_diagnostics(result.advantages, REWARDS, GROUPS, KEYS, TOKENS)


def test_dr_grpo_mass_favours_the_sparse_task_by_the_ratio_of_deviations():
    _, d = diagnostics("dr_grpo")
    dev = deviation_sums()
    assert d["sparse"]["mass_share"] == pytest.approx(dev["sparse"] / (dev["sparse"] + dev["dense"]))
    assert d["sparse"]["mass_share"] / d["dense"]["mass_share"] == pytest.approx(3.5 / 0.16)
    assert d["sparse"]["mean_abs"] == pytest.approx(3.5 / 8) and d["dense"]["mean_abs"] == pytest.approx(
        0.16 / 8
    )
    assert d["sparse"]["amplified"] == d["dense"]["amplified"] == 0.0


def test_grpo_marks_the_dense_near_ties_as_amplified():
    """Dense group 1: deviations ±0.035, ±0.015, unbiased std sqrt(0.0029 / 3) = 0.0311 → max |A| 1.126;
    group 2: ±0.025, ±0.005, std sqrt(0.0013 / 3) = 0.0208 → 1.201. Population stds 0.027 and 0.018 < 0.05.
    Sparse groups: std 0.5 and 0.577, far from a tie."""
    result, d = diagnostics("grpo")
    assert float(result.advantages[8:12].abs().max()) == pytest.approx(
        0.035 / math.sqrt(0.0029 / 3), rel=1e-4
    )
    assert d["dense"]["amplified"] == 1.0 and d["sparse"]["amplified"] == 0.0
    # per-group std normalisation gives both tasks comparable mass, unlike Dr.GRPO
    assert 0.3 < d["dense"]["mass_share"] < 0.7


def test_ema_grpo_shares_follow_sigma_tau():
    ema = TaskRewardEMA()
    result, d = diagnostics("ema_grpo", ema)
    sigma = {
        key: result.per_key[key]["ema_std"] + EPS for key in ("sparse", "dense")
    }  # A = (r - mean) / (σ_τ + EPS)
    dev = deviation_sums()
    want = (dev["sparse"] / sigma["sparse"]) / (dev["dense"] / sigma["dense"])
    assert d["sparse"]["mass_share"] / d["dense"]["mass_share"] == pytest.approx(want, rel=1e-6)
    assert d["sparse"]["mass_share"] + d["dense"]["mass_share"] == pytest.approx(1.0)


def test_tokens_weight_the_mass():
    tokens = torch.cat([torch.full((8,), 30.0), torch.full((8,), 10.0)])
    result = compute_advantages("dr_grpo", REWARDS, GROUPS, KEYS)
    d = advantage_diagnostics(result.advantages, REWARDS, GROUPS, KEYS, tokens)
    assert d["sparse"]["mass_share"] == pytest.approx(3 * 3.5 / (3 * 3.5 + 0.16))


def test_no_rollouts_no_diagnostics():
    assert (
        advantage_diagnostics(
            torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), [], torch.zeros(0)
        )
        == {}
    )
