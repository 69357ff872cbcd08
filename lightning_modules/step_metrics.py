"""Per-task step metrics that only appear in the steps that had the task.

Lightning's ``self.log(..., on_step=True)`` keeps a metric's last value for the rest of the epoch
and logs it again at every later step, so a task absent from a step would show an earlier step's
value in the CSV and in W&B. Metrics that exist only for some steps (one per task in the batch) go
straight to the loggers instead, at the step Lightning logs the others at and on the same cadence
(``log_every_n_steps``).
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L


def log_step_metrics(module: L.LightningModule, metrics: Mapping[str, float]) -> None:
    """Send ``metrics`` to every logger of ``module``'s trainer for this step only (rank 0 writes)."""
    trainer = module.trainer
    if not metrics or not trainer.loggers or trainer.sanity_checking:
        return
    # Lightning's own step counter and cadence for on-step metrics (the logger connector's).
    connector = trainer._logger_connector
    if not connector.should_update_logs:
        return
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)
