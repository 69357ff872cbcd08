"""Advantage estimators for GRPO-style RL: GRPO, Dr.GRPO and EMA-GRPO (SPEC §6).

Pure functions on tensors plus one small stateful object, :class:`TaskRewardEMA`, that holds the
per-task reward moments of EMA-GRPO. Nothing here imports Lightning or any other package of
this repository.

Conventions:

- ``rewards`` is a 1-D tensor ``[N]`` of overall rewards, one per rollout.
- ``group_ids`` is an integer tensor ``[N]``; rollouts of the same prompt share an id. Ids need
  not be contiguous or sorted.
- Every estimator returns one advantage per rollout (``[N]``); the caller broadcasts it over
  the response tokens.
- Statistics are computed in float64; advantages come back in the rewards' floating dtype
  (float32 for integer or boolean rewards) on the rewards' device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "AdvantageResult",
    "TaskRewardEMA",
    "compute_advantages",
    "dr_grpo_advantages",
    "ema_grpo_advantages",
    "grpo_advantages",
    "group_statistics",
]

EPS = 1e-6
"""Added to every divisor, as in the released code."""

ZERO_STD_TOL = 1e-8
"""A group whose population std is at most this counts as zero-variance (its advantages are 0)."""

GuardMode = Literal["fallback", "clip"]
Estimator = Literal["ema_grpo", "grpo", "dr_grpo"]


# --------------------------------------------------------------------------------------------
# Group statistics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupStats:
    """Per-group statistics of a batch (all float64, on the rewards' device).

    ``index`` maps each row to its contiguous group number ``0..G-1`` (groups are numbered in
    ascending order of their ids).
    """

    index: Tensor  # [N] long
    counts: Tensor  # [G]
    mean: Tensor  # [G]
    pop_std: Tensor  # [G] population std (ddof=0)
    unbiased_std: Tensor  # [G] sample std (ddof=1); 0 for groups of one rollout

    @property
    def num_groups(self) -> int:
        """Number of groups G."""
        return int(self.counts.numel())


def group_statistics(rewards: Tensor, group_ids: Tensor) -> GroupStats:
    """Mean, population std and unbiased std of every prompt group, vectorised (two-pass)."""
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of equal length, got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    r = rewards.detach().to(torch.float64)
    _, index = torch.unique(group_ids.to(rewards.device), return_inverse=True)
    num_groups = int(index.max().item()) + 1 if index.numel() else 0
    counts = torch.bincount(index, minlength=num_groups).to(torch.float64)
    sums = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(0, index, r)
    mean = sums / counts.clamp_min(1)
    sq_dev = (r - mean[index]) ** 2
    ssd = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(0, index, sq_dev)
    pop_std = (ssd / counts.clamp_min(1)).sqrt()
    unbiased_std = torch.where(counts > 1, (ssd / (counts - 1).clamp_min(1)).sqrt(), torch.zeros_like(ssd))
    return GroupStats(index=index, counts=counts, mean=mean, pop_std=pop_std, unbiased_std=unbiased_std)


def _out_dtype(rewards: Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.float32


def _centered(rewards: Tensor, stats: GroupStats) -> tuple[Tensor, Tensor]:
    """R − group mean (float64), exactly 0 in zero-variance groups; and the per-group zero mask."""
    zero = stats.pop_std <= ZERO_STD_TOL
    centered = rewards.detach().to(torch.float64) - stats.mean[stats.index]
    centered = torch.where(zero[stats.index], torch.zeros_like(centered), centered)
    return centered, zero


def grpo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """GRPO: A = (R − mean_g) / (std_g + 1e-6), with the unbiased (ddof=1) group std.

    A group of a single rollout, or of equal rewards, gets advantage 0.
    """
    stats = group_statistics(rewards, group_ids)
    centered, _ = _centered(rewards, stats)
    return (centered / (stats.unbiased_std[stats.index] + EPS)).to(_out_dtype(rewards))


def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr.GRPO: A = R − mean_g, no division."""
    stats = group_statistics(rewards, group_ids)
    centered, _ = _centered(rewards, stats)
    return centered.to(_out_dtype(rewards))


# --------------------------------------------------------------------------------------------
# Per-task EMA of reward moments
# --------------------------------------------------------------------------------------------
Moments = dict[str, tuple[float, float, int]]
"""key → (sum R, sum R², count)."""


def _local_moments(keys: Sequence[str], rewards: Tensor) -> Moments:
    r = rewards.detach().flatten().to(device="cpu", dtype=torch.float64)
    if len(keys) != r.numel():
        raise ValueError(f"got {len(keys)} task keys for {r.numel()} rewards")
    if not keys:
        return {}
    names = sorted(set(keys))
    position = {k: i for i, k in enumerate(names)}
    index = torch.tensor([position[k] for k in keys], dtype=torch.long)
    sums = torch.zeros(len(names), dtype=torch.float64).index_add_(0, index, r)
    sq_sums = torch.zeros(len(names), dtype=torch.float64).index_add_(0, index, r * r)
    counts = torch.bincount(index, minlength=len(names))
    return {k: (float(sums[i]), float(sq_sums[i]), int(counts[i])) for i, k in enumerate(names)}


def _merge_moments(parts: Sequence[Moments]) -> Moments:
    """Sum moments over ranks, key by key in sorted order and rank by rank (deterministic)."""
    merged: Moments = {}
    for key in sorted({k for part in parts for k in part}):
        s, s2, n = 0.0, 0.0, 0
        for part in parts:
            if key in part:
                s, s2, n = s + part[key][0], s2 + part[key][1], n + part[key][2]
        merged[key] = (s, s2, n)
    return merged


class TaskRewardEMA:
    """Per-task EMA of the first two reward moments (EMA-GRPO, SPEC §6).

    For every task key τ: ``m1 ← β·m1 + (1−β)·μ`` and ``m2 ← β·m2 + (1−β)·ν`` with the batch
    moments μ = mean(R), ν = mean(R²); the first time τ appears ``m1 = μ, m2 = ν`` (no bias
    correction). ``std(τ) = max(sqrt(max(m2 − m1², 0)), min_std)``.

    **Distributed.** When ``torch.distributed`` is initialised (and ``sync_dist`` is true),
    :meth:`update` / :meth:`update_many` are *collective*: every rank must call them, the same
    number of times, even with an empty batch. The per-key sums (ΣR, ΣR², count) of all ranks
    are gathered in one collective (``all_gather_object``) and merged over the union of keys in
    sorted order, so every rank ends with identical state, equal (up to float64 rounding) to one
    process seeing the whole batch. A key present on only some ranks works.

    The state is plain Python floats and ints (:meth:`state_dict`), fit for a Lightning
    checkpoint.
    """

    def __init__(
        self,
        decay: float = 0.99,
        min_std: float = 1e-3,
        sync_dist: bool = True,
        process_group: Any = None,
    ) -> None:
        """``decay`` is β; ``process_group`` is the group to synchronise over (default: world)."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if min_std <= 0.0:
            raise ValueError(f"min_std must be positive, got {min_std}")
        self.decay = float(decay)
        self.min_std = float(min_std)
        self.sync_dist = sync_dist
        self.process_group = process_group
        self._m1: dict[str, float] = {}
        self._m2: dict[str, float] = {}
        self._updates: dict[str, int] = {}

    # ---- updates --------------------------------------------------------------------------
    def update(self, key: str, rewards: Tensor) -> None:
        """Fold one batch of rewards of task ``key`` into the EMA (collective under DDP)."""
        flat = rewards.detach().flatten()
        self.update_many([key] * flat.numel(), flat)

    def update_many(self, keys: Sequence[str], rewards: Tensor) -> Moments:
        """Fold a batch with mixed task keys (``keys[i]`` is the key of ``rewards[i]``).

        One collective round for all keys under DDP. Returns the merged (global) batch moments
        ``{key: (sum R, sum R², count)}`` that were applied.
        """
        moments = _local_moments(list(keys), rewards)
        if self.sync_dist and dist.is_available() and dist.is_initialized():
            world = dist.get_world_size(self.process_group)
            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, moments, group=self.process_group)
            moments = _merge_moments(parts)
        beta = self.decay
        for key in sorted(moments):
            s, s2, n = moments[key]
            if n == 0:
                continue
            mu, nu = s / n, s2 / n
            if key in self._m1:
                self._m1[key] = beta * self._m1[key] + (1.0 - beta) * mu
                self._m2[key] = beta * self._m2[key] + (1.0 - beta) * nu
                self._updates[key] += 1
            else:
                self._m1[key], self._m2[key], self._updates[key] = mu, nu, 1
        return moments

    # ---- queries --------------------------------------------------------------------------
    def _check(self, key: str) -> None:
        if key not in self._m1:
            raise KeyError(f"TaskRewardEMA has no statistics for task key {key!r} (known: {self.keys()})")

    def mean(self, key: str) -> float:
        """EMA of the mean reward of ``key`` (m1)."""
        self._check(key)
        return self._m1[key]

    def second_moment(self, key: str) -> float:
        """EMA of the mean squared reward of ``key`` (m2)."""
        self._check(key)
        return self._m2[key]

    def std(self, key: str) -> float:
        """Task scale σ_τ = max(sqrt(max(m2 − m1², 0)), min_std)."""
        self._check(key)
        var = max(self._m2[key] - self._m1[key] ** 2, 0.0)
        return max(math.sqrt(var), self.min_std)

    def updates(self, key: str) -> int:
        """How many batches have updated ``key``."""
        self._check(key)
        return self._updates[key]

    def keys(self) -> list[str]:
        """Known task keys, sorted."""
        return sorted(self._m1)

    def __contains__(self, key: object) -> bool:
        return key in self._m1

    def __len__(self) -> int:
        return len(self._m1)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{key: {"mean": m1, "std": σ}}`` for logging."""
        return {k: {"mean": self.mean(k), "std": self.std(k)} for k in self.keys()}

    # ---- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state: ``{"decay", "min_std", "m1": {k: float}, "m2": {...}, "updates": {k: int}}``."""
        return {
            "decay": self.decay,
            "min_std": self.min_std,
            "m1": dict(self._m1),
            "m2": dict(self._m2),
            "updates": dict(self._updates),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the moments saved by :meth:`state_dict` (``decay``/``min_std`` keep their
        constructor values: they are configuration, not state)."""
        m1, m2 = state["m1"], state["m2"]
        if set(m1) != set(m2):
            raise ValueError("TaskRewardEMA state: m1 and m2 have different keys")
        updates = state.get("updates", {})
        self._m1 = {str(k): float(v) for k, v in m1.items()}
        self._m2 = {str(k): float(v) for k, v in m2.items()}
        self._updates = {str(k): int(updates.get(k, 1)) for k in m1}


# --------------------------------------------------------------------------------------------
# EMA-GRPO
# --------------------------------------------------------------------------------------------
@dataclass
class AdvantageResult:
    """Advantages ``[N]`` plus batch statistics for logging.

    ``guarded_groups``: groups that tripped the guard (fell back to the group std in
    ``"fallback"`` mode, or had at least one advantage clipped in ``"clip"`` mode); always 0 for
    GRPO and Dr.GRPO. ``zero_std_groups``: fraction of groups whose rewards are all equal.
    ``per_key[τ]`` holds ``groups``, ``zero_std_groups`` (fraction), ``guarded_groups`` and, for
    EMA-GRPO, ``ema_mean`` and ``ema_std`` (σ_τ used for this batch).
    """

    advantages: Tensor
    num_groups: int
    zero_std_groups: float
    guarded_groups: int = 0
    per_key: dict[str, dict[str, float]] = field(default_factory=dict)


def _key_index(task_keys: Sequence[str], device: torch.device) -> tuple[list[str], Tensor]:
    names = sorted(set(task_keys))
    position = {k: i for i, k in enumerate(names)}
    return names, torch.tensor([position[k] for k in task_keys], dtype=torch.long, device=device)


def _group_keys(stats: GroupStats, row_key: Tensor) -> Tensor:
    """The key index of every group; raises if a group mixes task keys."""
    g = stats.num_groups
    lo = torch.full((g,), row_key.numel() + 1, dtype=torch.long, device=row_key.device)
    hi = torch.full((g,), -1, dtype=torch.long, device=row_key.device)
    lo = lo.scatter_reduce(0, stats.index, row_key, reduce="amin")
    hi = hi.scatter_reduce(0, stats.index, row_key, reduce="amax")
    if bool((lo != hi).any()):
        raise ValueError("a prompt group mixes task keys; every rollout of a group must share one task key")
    return lo


def _per_key_stats(
    names: list[str], group_key: Tensor, zero: Tensor, guarded: Tensor
) -> dict[str, dict[str, float]]:
    k = len(names)
    groups = torch.bincount(group_key, minlength=k)
    zeros = torch.bincount(group_key, weights=zero.to(torch.float64), minlength=k)
    guards = torch.bincount(group_key, weights=guarded.to(torch.float64), minlength=k)
    return {
        name: {
            "groups": float(groups[i]),
            "zero_std_groups": float(zeros[i] / groups[i]) if groups[i] > 0 else 0.0,
            "guarded_groups": float(guards[i]),
        }
        for i, name in enumerate(names)
    }


def ema_grpo_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    task_keys: Sequence[str],
    ema: TaskRewardEMA,
    guard: float = 5.0,
    guard_mode: GuardMode = "fallback",
) -> AdvantageResult:
    """EMA-GRPO (SPEC §6): update ``ema`` with this batch first, then
    A_i = (R_i − mean of its group) / (σ_τ + 1e-6).

    Guard: with ``guard_mode="fallback"`` (released) a group with any |A| > ``guard`` uses
    (R − mean_g) / (population std_g + 1e-6) instead; with ``"clip"`` (paper) advantages are
    clamped to [−guard, guard]. Zero-variance groups get exactly 0. Every group must hold a
    single task key. Under DDP the EMA update is collective (see :class:`TaskRewardEMA`), and
    the rows of one group must live on one rank.
    """
    if guard_mode not in ("fallback", "clip"):
        raise ValueError(f"guard_mode must be 'fallback' or 'clip', got {guard_mode!r}")
    task_keys = list(task_keys)
    ema.update_many(task_keys, rewards)  # update first (collective under DDP) ...
    if rewards.numel() == 0:
        return AdvantageResult(rewards.detach().to(_out_dtype(rewards)), 0, 0.0)

    stats = group_statistics(rewards, group_ids)  # ... then normalise
    centered, zero = _centered(rewards, stats)
    names, row_key = _key_index(task_keys, rewards.device)
    group_key = _group_keys(stats, row_key)
    sigma = torch.tensor([ema.std(k) for k in names], dtype=torch.float64, device=rewards.device)
    adv = centered / (sigma[row_key] + EPS)

    g = stats.num_groups
    if guard_mode == "fallback":
        max_abs = torch.zeros(g, dtype=torch.float64, device=adv.device)
        max_abs = max_abs.scatter_reduce(0, stats.index, adv.abs(), reduce="amax")
        guarded = max_abs > guard
        fallback = centered / (stats.pop_std[stats.index] + EPS)
        adv = torch.where(guarded[stats.index], fallback, adv)
    else:
        hit = (adv.abs() > guard).to(torch.float64)
        guarded = torch.zeros(g, dtype=torch.float64, device=adv.device).index_add_(0, stats.index, hit) > 0
        adv = adv.clamp(-guard, guard)

    per_key = _per_key_stats(names, group_key.cpu(), zero.cpu(), guarded.cpu())
    for i, name in enumerate(names):
        per_key[name]["ema_mean"] = ema.mean(name)
        per_key[name]["ema_std"] = float(sigma[i])
    return AdvantageResult(
        advantages=adv.to(_out_dtype(rewards)),
        num_groups=g,
        zero_std_groups=float(zero.double().mean()),
        guarded_groups=int(guarded.sum()),
        per_key=per_key,
    )


def compute_advantages(
    estimator: Estimator,
    rewards: Tensor,
    group_ids: Tensor,
    task_keys: Sequence[str] | None = None,
    ema: TaskRewardEMA | None = None,
    guard: float = 5.0,
    guard_mode: GuardMode = "fallback",
) -> AdvantageResult:
    """Dispatch on the ablation flag ``advantage: ema_grpo | grpo | dr_grpo``.

    ``ema_grpo`` needs ``task_keys`` and ``ema``. For ``grpo``/``dr_grpo`` the EMA is not touched;
    ``task_keys``, if given, only fill ``per_key`` (groups and zero-std fraction).
    """
    if estimator == "ema_grpo":
        if task_keys is None or ema is None:
            raise ValueError("advantage 'ema_grpo' needs task_keys and an ema")
        return ema_grpo_advantages(rewards, group_ids, task_keys, ema, guard=guard, guard_mode=guard_mode)
    if estimator == "grpo":
        adv = grpo_advantages(rewards, group_ids)
    elif estimator == "dr_grpo":
        adv = dr_grpo_advantages(rewards, group_ids)
    else:
        raise ValueError(f"unknown advantage estimator {estimator!r}; use ema_grpo, grpo or dr_grpo")
    if rewards.numel() == 0:
        return AdvantageResult(adv, 0, 0.0)
    stats = group_statistics(rewards, group_ids)
    zero = stats.pop_std <= ZERO_STD_TOL
    per_key: dict[str, dict[str, float]] = {}
    if task_keys is not None:
        names, row_key = _key_index(list(task_keys), rewards.device)
        group_key = _group_keys(stats, row_key)
        per_key = _per_key_stats(names, group_key.cpu(), zero.cpu(), torch.zeros_like(zero).cpu())
    return AdvantageResult(adv, stats.num_groups, float(zero.double().mean()), 0, per_key)
