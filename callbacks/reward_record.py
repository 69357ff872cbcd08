"""`RewardRecordCallback`: every RL step's kept groups (task, rewards, response tokens), the EMA state
before the step and the advantages, one JSON line per step, for the counterfactual ablation
(`onethinker ablate --counterfactual true`: all three estimators recomputed on the same rollouts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

RECORD_FILE = "rewards.jsonl"


class RewardRecordCallback(L.Callback):
    """Appends ``{"step", "estimator", "guard", "guard_mode", "rollouts_per_prompt", "groups",
    "advantages", "ema_before"}`` to ``<log dir>/rewards.jsonl`` after each RL step that trained
    (rank 0; the figures are global). A line is written whole and flushed, so a crash leaves at most
    one unfinished last line, which the reader skips and counts.

    Args:
        dirpath: folder of the file (default: the trainer's log folder).
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def path(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath or trainer.log_dir or trainer.default_root_dir) / RECORD_FILE

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = getattr(pl_module, "last_step", None)
        if not trainer.is_global_zero or not step:
            return
        hp = pl_module.hparams
        line = {
            "step": trainer.global_step,
            "estimator": hp.advantage,
            "guard": hp.guard,
            "guard_mode": hp.guard_mode,
            "rollouts_per_prompt": hp.rollouts_per_prompt,
            "groups": step["groups"],
            "advantages": step["advantages"],
            "ema_before": step.get("ema_before"),
        }
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
