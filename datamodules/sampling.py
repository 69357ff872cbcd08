"""Mixed-task sampling: weighted, temperature-scaled, deterministic per seed and rank, resumable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from datamodules.tasks import mix_group

# Record attribute each weight dimension reads.
WEIGHT_DIMENSIONS: dict[str, str] = {
    "problem_type": "problem_type",
    "mix_group": "problem_type",
    "data_type": "data_type",
    "data_source": "data_source",
}


def _value(record: object, dimension: str) -> str:
    value = getattr(record, WEIGHT_DIMENSIONS[dimension])
    return mix_group(value) if dimension == "mix_group" else value


def sampling_probabilities(
    records: Sequence[object],
    weights: Mapping[str, Mapping[str, float]] | None = None,
    temperature: float = 1.0,
    iterations: int = 100,
) -> np.ndarray:
    """Probability of drawing each record.

    Start from cells (problem_type, data_type, data_source) whose mass is size**(1/temperature):
    temperature 1 keeps natural proportions, a larger one flattens them. Then raking (iterative
    proportional fitting) rescales the cells so that each weighted dimension's marginal shares equal
    its normalised weights, e.g. ``{"data_type": {"image": 1, "video": 1}}`` for image/video balance.
    """
    if not records:
        raise ValueError("no records to sample from")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    weights = dict(weights or {})
    cells = [(r.problem_type, r.data_type, r.data_source) for r in records]
    sizes = Counter(cells)
    mass = np.array([sizes[c] ** (1.0 / temperature) / sizes[c] for c in cells], dtype=np.float64)
    columns = {}
    for dim, table in weights.items():
        if dim not in WEIGHT_DIMENSIONS:
            raise ValueError(f"unknown weight dimension {dim!r}; valid: {', '.join(WEIGHT_DIMENSIONS)}")
        values = np.array([_value(r, dim) for r in records])
        present = sorted(set(values.tolist()))
        missing = [v for v in present if v not in table]
        if missing:
            raise ValueError(f"weights[{dim!r}] has no entry for {missing}; present values: {present}")
        if any(table[v] < 0 for v in present) or sum(table[v] for v in present) <= 0:
            raise ValueError(f"weights[{dim!r}] must be >= 0 with a positive sum over {present}")
        target = {v: table[v] / sum(table[u] for u in present) for v in present}
        columns[dim] = (values, target)
    for _ in range(iterations if columns else 0):
        for values, target in columns.values():
            for v, share in target.items():
                sel = values == v
                current = mass[sel].sum()
                mass[sel] *= (share / current) if current > 0 else 0.0
    total = mass.sum()
    if total <= 0:
        raise ValueError("the sampling weights give every record zero probability")
    return mass / total


class MixedTaskSampler(Sampler[tuple[int, int, int]]):
    """Weighted sampling with replacement from a global stream that ranks share by stride.

    Epoch ``e`` draws ``samples_per_epoch * world_size`` indices with a generator seeded by
    (seed, e); rank ``r`` takes every ``world_size``-th from offset ``r``, so ranks never see the
    same position. It yields (epoch, position, record index) keys, so each row can tell the
    data module how far the stream was consumed; ``state_dict`` records that point, so a resumed
    run continues the same sequence.
    """

    def __init__(
        self,
        probabilities: np.ndarray,
        samples_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if samples_per_epoch <= 0:
            raise ValueError(f"samples_per_epoch must be > 0, got {samples_per_epoch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.probabilities = torch.as_tensor(probabilities, dtype=torch.float64)
        self.samples_per_epoch, self.seed, self.rank, self.world_size = (
            samples_per_epoch,
            seed,
            rank,
            world_size,
        )
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        # Always the whole epoch, even right after a mid-epoch resume: Lightning reads the length once
        # per run, to size every later epoch and the schedule's ``estimated_stepping_batches``.
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def indices(self, epoch: int) -> list[int]:
        """This rank's full index list for ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        drawn = torch.multinomial(
            self.probabilities, self.samples_per_epoch * self.world_size, True, generator=g
        )
        return drawn[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        if self.start >= self.samples_per_epoch:
            self.epoch, self.start = self.epoch + 1, 0
        epoch, start = self.epoch, self.start
        for pos, index in enumerate(self.indices(epoch)[start:], start=start):
            yield epoch, pos, index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.start = int(state["epoch"]), int(state["start"])
        if self.start >= self.samples_per_epoch:
            self.epoch, self.start = self.epoch + 1, 0

    def consumed(self, epoch: int, position: int) -> None:
        """Mark every position up to ``position`` of ``epoch`` as used (called per consumed batch)."""
        if (epoch, position + 1) > (self.epoch, self.start):
            self.epoch, self.start = epoch, position + 1
