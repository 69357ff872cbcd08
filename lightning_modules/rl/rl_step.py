"""The RL step's agreement across ranks, as pure functions (ARCHITECTURE.md, "The RL step across ranks").

Every rank rolls out and scores its own prompts. What filtering, the EMA and the update plan need of
each prompt group (its owner rank, generate call, task key and rewards) is gathered once per rollout
round; every decision is then computed from that one global list, identically on every rank:

- which groups are kept by online filtering, and whether another round of prompts is drawn;
- the advantages and the EMA update, on the global batch (as one process would on all of it);
- the updates (``prompts_per_update`` global groups each, in global order) and how many micro-batches
  each rank runs in each of them. A rank that owns fewer rows of an update pads with zero-weight
  micro-batches, so every rank makes the same forward, backward and collective calls.

Padding rather than moving rows between ranks: a row carries its pixels and prompt, and moving them
costs a transfer of every tensor of the row; a padded micro-batch costs one forward and backward.

Global order is (rollout round, rank, group within the rank's call), so a one-process run on the
ranks' batches concatenated sees the same groups in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch.distributed as dist

MicroBatch = tuple[int, list[int]]  # (the rank's generate call, rows of that call's rollouts)


@dataclass(frozen=True)
class GroupRecord:
    """One prompt group, as every rank learns it.

    Attributes:
        rank: the rank that rolled it out (and holds its rows).
        part: that rank's generate call in the step (0: the step's batch; 1, 2, ...: resample rounds).
        index: the group within that call; its rows are ``index * n ... index * n + n - 1``.
        key: the task key (EMA key).
        scores: reward field -> one value per rollout.
        tokens: response tokens per rollout.
    """

    rank: int
    part: int
    index: int
    key: str
    scores: dict[str, tuple[float, ...]] = field(hash=False)
    tokens: tuple[int, ...] = ()

    def mean(self, field_name: str) -> float:
        values = self.scores[field_name]
        return sum(values) / len(values) if values else 0.0

    def rows(self, n: int) -> list[int]:
        return list(range(self.index * n, self.index * n + n))


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_groups(local: Sequence[GroupRecord]) -> list[GroupRecord]:
    """Every rank's groups in rank order (one ``all_gather_object``; collective under distributed)."""
    _, size = world()
    if size == 1:
        return list(local)
    parts: list[list[GroupRecord] | None] = [None] * size
    dist.all_gather_object(parts, list(local))
    return [g for part in parts for g in (part or [])]


def passes_filter(group: GroupRecord, metric: str, band: tuple[float, float], enabled: bool) -> bool:
    """Online filtering: keep a group whose mean ``metric`` lies strictly inside ``band``."""
    low, high = band
    return not enabled or low < group.mean(metric) < high


def kept_groups(
    groups: Sequence[GroupRecord], metric: str, band: tuple[float, float], enabled: bool, budget: int
) -> list[GroupRecord]:
    """The first ``budget`` groups that pass the filter, in global order."""
    return [g for g in groups if passes_filter(g, metric, band, enabled)][: max(budget, 0)]


def plan_updates(kept: Sequence[GroupRecord], prompts_per_update: int) -> list[list[GroupRecord]]:
    """Consecutive updates of ``prompts_per_update`` global groups; the last one may be smaller (as in
    one process: the kept prompts need not divide evenly)."""
    if prompts_per_update < 1:
        raise ValueError(f"prompts_per_update must be at least 1, got {prompts_per_update}")
    return [list(kept[i : i + prompts_per_update]) for i in range(0, len(kept), prompts_per_update)]


def rank_micro_batches(groups: Sequence[GroupRecord], rank: int, n: int, size: int) -> list[MicroBatch]:
    """``rank``'s micro-batches of ``groups``: its rows, per generate call, ``size`` rows at a time."""
    by_part: dict[int, list[int]] = {}
    for g in groups:
        if g.rank == rank:
            by_part.setdefault(g.part, []).extend(g.rows(n))
    return [(part, rows[i : i + size]) for part, rows in by_part.items() for i in range(0, len(rows), size)]


def micro_batch_count(groups: Sequence[GroupRecord], world_size: int, n: int, size: int) -> int:
    """The most micro-batches any rank runs over ``groups``: what every rank runs, padding included."""
    return max(len(rank_micro_batches(groups, r, n, size)) for r in range(world_size))
