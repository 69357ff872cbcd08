"""Prints where a run's logs went and its first and last training loss."""

from __future__ import annotations

from typing import Any

import lightning as L


class RunSummary(L.Callback):
    """At the end of ``fit``: log folders, and the training loss at the first and last step.

    Args:
        metric: the logged metric to report.
    """

    def __init__(self, metric: str = "train/loss") -> None:
        self.metric = metric
        self.first: float | None = None
        self.last: float | None = None
        self.first_step = self.last_step = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        if self.first is None:
            self.first, self.first_step = float(value), trainer.global_step
        self.last, self.last_step = float(value), trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            print(f"[run summary] {type(logger).__name__} logs: {logger.log_dir or logger.save_dir}")
        if self.first is not None:
            print(
                f"[run summary] {self.metric}: {self.first:.4f} at step {self.first_step} -> {self.last:.4f} at step {self.last_step}"
            )
