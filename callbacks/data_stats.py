"""Logs the rows the data side dropped (bad media, too long), so no skip goes unseen."""

from __future__ import annotations

from collections import Counter
from typing import Any

import lightning as L


class SkippedRowsLogger(L.Callback):
    """Cumulative ``<split>/skipped/<reason>/<problem_type>/<data_type>`` counts from ``batch["skipped"]``."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {"train": Counter(), "val": Counter()}

    def _log(self, pl_module: L.LightningModule, split: str, batch: Any) -> None:
        skipped = batch.get("skipped") if isinstance(batch, dict) else None
        if not skipped:
            return
        self.counts[split].update(skipped)
        for key, n in self.counts[split].items():
            pl_module.log(
                f"{split}/skipped/{key}",
                float(n),
                on_step=split == "train",
                on_epoch=split != "train",
                reduce_fx="max",
                batch_size=1,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._log(pl_module, "train", batch)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._log(pl_module, "val", batch)

    def state_dict(self) -> dict[str, Any]:
        return {split: dict(c) for split, c in self.counts.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts = {split: Counter(state_dict.get(split, {})) for split in ("train", "val")}
