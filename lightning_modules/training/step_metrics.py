"""Step metrics that only appear in the steps that computed them.

Lightning's ``self.log(..., on_step=True)`` keeps a metric's last value for the rest of the epoch
and logs it again at every later step, so a task absent from a step would show an earlier step's
value in the CSV and in W&B, and so would every metric of an RL step that kept no group. Metrics
that exist only for some steps go straight to the loggers instead, at the step Lightning logs the
others at and on the same cadence (``log_every_n_steps``); they also reach
``trainer.callback_metrics`` for callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch


def log_step_metrics(module: L.LightningModule, metrics: Mapping[str, float]) -> None:
    """Send ``metrics`` to every logger of ``module``'s trainer for this step only (rank 0 writes)."""
    trainer = module.trainer
    if not metrics or trainer.sanity_checking:
        return
    trainer.callback_metrics.update({name: torch.tensor(float(v)) for name, v in metrics.items()})
    if not trainer.loggers:
        return
    # Lightning's own step counter and cadence for on-step metrics (the logger connector's).
    connector = trainer._logger_connector
    if not connector.should_update_logs:
        return
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)
