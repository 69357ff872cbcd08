"""`SFTModule`: stage 1, cross-entropy on the assistant turn only."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable

from datamodules.packing import sample_spans
from datamodules.tasks import task_key
from lightning_modules.model.backbone import (
    VisionLanguageBackbone,
    join_sharded_call,
    placeholder_row,
    vision_grad_anchor,
)
from lightning_modules.training.schedules import WarmupSchedule
from lightning_modules.training.sharding import ShardingSettings, configure_sharding, total_grad_norm
from lightning_modules.training.step_metrics import log_step_metrics


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)


def per_task_sums(
    nll: torch.Tensor, mask: torch.Tensor, meta: list[dict[str, Any]], spans: list[tuple[int, int, int]]
) -> dict[str, tuple[torch.Tensor, int]]:
    """Summed token NLL and token count per ``problem_type/data_type`` of the samples, each sample
    at its (row, start, end) span (`datamodules.packing.sample_spans`)."""
    out: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for m, (row, start, end) in zip(meta, spans, strict=True):
        key = task_key(m["problem_type"], m["data_type"], "task_modality")
        weights = mask[row, start:end]
        out[key][0] = out[key][0] + (nll[row, start:end] * weights).sum()
        out[key][1] += int(weights.sum())
    return {k: (v[0], v[1]) for k, v in out.items()}


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of a `VisionLanguageBackbone` on ``<think>…</think><answer>…</answer>`` turns.

    The loss is the token mean of the assistant tokens' negative log-likelihood over the global
    batch (every rank's rows), so N processes train as one process on the concatenated batch.

    Args:
        backbone: the model and processor.
        optimizer: optimizer factory over the trainable parameters (recipe: AdamW, lr 1e-5).
        schedule: learning-rate schedule (recipe: cosine, warm-up ratio 0.02).
        sharding: FSDP2 settings, applied when the Trainer's strategy is ``ModelParallelStrategy``
            (ignored on one device and under DDP).
    """

    def __init__(
        self,
        backbone: VisionLanguageBackbone,
        optimizer: OptimizerCallable = _adamw,
        schedule: WarmupSchedule | None = None,
        sharding: ShardingSettings | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.schedule = schedule or WarmupSchedule("cosine", 0.02)
        self.sharding = sharding or ShardingSettings()
        self._step_started = 0.0

    def configure_model(self) -> None:
        configure_sharding(self, self.backbone, self.sharding)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, int]], int]:
        mask = (batch["labels"] != -100).float()
        nll = -self.backbone.token_logprobs(batch, mask.bool())
        tokens = int(mask.sum())
        tasks = per_task_sums(nll.detach(), mask, batch["meta"], sample_spans(batch))
        return (nll * mask).sum() / max(tokens, 1), tasks, tokens

    def _log_step(self, split: str, loss: torch.Tensor, tasks: dict, size: int) -> None:
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, batch_size=size)
        if on_step:  # this step's tasks only: a task absent from the step logs nothing
            log_step_metrics(
                self, {f"train/loss/{task}": float(t / c) for task, (t, c) in tasks.items() if c}
            )
            return
        for task, (total, count) in tasks.items():
            if count:
                self.log(f"{split}/loss/{task}", total / count, on_epoch=True, batch_size=count)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "labels" not in batch:  # every row was skipped (and counted by the data module)
            if self.trainer.world_size == 1:
                return None
            # The other ranks' forwards, backwards and reductions wait for this rank's.
            loss, tasks, tokens = self._placeholder_loss(), {}, 0
        else:
            loss, tasks, tokens = self.loss(batch)
            if self.trainer.world_size > 1:
                loss = loss + vision_grad_anchor(self.backbone, batch)
        loss, global_loss = self._global_token_mean(loss, tokens)
        self._log_step("train", global_loss, tasks, max(len(batch["meta"]), 1))
        return loss

    def _placeholder_loss(self) -> torch.Tensor:
        """A zero loss with the graph of a real step: one scored token through `token_logprobs` (the
        same FSDP hooks and collectives as a real batch) and the vision anchor (a text row misses the tower)."""
        batch, scored = placeholder_row(self.backbone, self.device)
        return 0.0 * self.backbone.token_logprobs(batch, scored).sum() + vision_grad_anchor(
            self.backbone, batch
        )

    def _global_token_mean(self, loss: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's term of the global token mean, and the global mean itself (for logging).

        Gradients are averaged over ranks (DDP, FSDP), so the rank's token sum is scaled by
        ``world_size / global tokens``: the average is then the mean over every rank's tokens.
        """
        world = self.trainer.world_size
        if world == 1:
            return loss, loss.detach()
        stats = torch.stack([loss.detach() * tokens, loss.new_tensor(float(tokens))])
        total, global_tokens = self.trainer.strategy.reduce(stats, reduce_op="sum").unbind()
        global_tokens = global_tokens.clamp(min=1)
        return loss * (tokens * world / global_tokens), total / global_tokens

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if "attention_mask" not in batch:
            return
        seconds = time.perf_counter() - self._step_started
        tokens = int(batch["attention_mask"].sum())
        self.log(
            "train/tokens_per_sec", tokens / max(seconds, 1e-9), on_step=True, prog_bar=True, batch_size=1
        )
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norm = total_grad_norm(self.backbone)
        if norm is not None:
            self.log("train/grad_norm", norm, on_step=True, batch_size=1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "labels" not in batch:  # every row was skipped
            join_sharded_call(self.backbone, self.device)
            return
        loss, tasks, _ = self.loss(batch)
        self._log_step("val", loss, tasks, len(batch["meta"]))

    def configure_optimizers(self) -> Any:
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        scheduler = self.schedule.build(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["backbone_init"] = self.backbone.init_args
