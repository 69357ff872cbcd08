"""`TaskRewardStatsCallback`: owns EMA-GRPO's per-task reward statistics across steps and checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L

from lightning_modules.rl.advantages import TaskRewardEMA


class TaskRewardStatsCallback(L.Callback):
    """Holds the `TaskRewardEMA`, hands it to the module, saves it in checkpoints and logs its curves.

    The module reaches the statistics only through ``pl_module.attach_reward_ema(ema)``. `GRPOModule`
    updates them with the step's global batch, gathered on every rank, so the EMA itself runs no
    collective (``sync_dist=False``) and every rank holds the same state.

    Args:
        decay: EMA decay β (released: 0.99).
        min_std: floor on the task scale σ (released: 1e-3).
    """

    def __init__(self, decay: float = 0.99, min_std: float = 1e-3) -> None:
        self.ema = TaskRewardEMA(decay=decay, min_std=min_std, sync_dist=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        attach = getattr(pl_module, "attach_reward_ema", None)
        if attach is not None:
            attach(self.ema)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for key, stats in self.ema.summary().items():
            pl_module.log(f"train/ema/mean/{key}", stats["mean"], on_step=True, batch_size=1)
            pl_module.log(f"train/ema/std/{key}", stats["std"], on_step=True, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ema.load_state_dict(state_dict)
