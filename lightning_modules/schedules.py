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

    def build(self, optimizer: Optimizer, total_steps: int) -> LRScheduler:
        from transformers import get_scheduler

        warmup = math.ceil(self.warmup_ratio * total_steps)
        name = "constant_with_warmup" if self.name == "constant" else self.name
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total_steps, 1))
