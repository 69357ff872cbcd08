"""Learning-rate schedules with warm-up given as a ratio of the run (transformers' schedule functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


@dataclass
class WarmupSchedule:
    """Warm-up for ``warmup_ratio`` of the optimizer steps, then ``name`` (cosine, linear or constant).

    Args:
        name: shape after warm-up.
        warmup_ratio: share of all optimizer steps spent warming up (SFT recipe: 0.02).
    """

    name: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.0

    @property
    def needs_horizon(self) -> bool:
        """Whether the shape depends on the run's length (all but a constant rate without warm-up)."""
        return self.name != "constant" or self.warmup_ratio > 0

    def horizon(self, max_steps: int, owner: str) -> int:
        """The total optimizer steps to build with: ``max_steps``; an error naming ``owner`` when the
        shape needs a horizon and ``max_steps`` is unset (a constant rate builds with any)."""
        if max_steps > 0:
            return max_steps
        if self.needs_horizon:
            raise ValueError(
                f"{owner}: the '{self.name}' schedule with warmup_ratio={self.warmup_ratio} needs the run's "
                "length: set trainer.max_steps (optimizer updates), or use name: constant, warmup_ratio: 0"
            )
        return 1

    def build(self, optimizer: Optimizer, total_steps: int) -> LRScheduler:
        from transformers import get_scheduler

        warmup = math.ceil(self.warmup_ratio * total_steps)
        name = "constant_with_warmup" if self.name == "constant" else self.name
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1))
