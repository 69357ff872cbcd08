"""`RolloutTableCallback`: a sample of the latest GRPO rollouts, as a W&B Table (or JSONL)."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from rewards import REWARD_FIELDS

COLUMNS = (
    "step",
    "task",
    "problem_id",
    "media",
    "prompt",
    "response",
    "reward_overall",
    "reward_accuracy",
    "reward_format",
    "reward_structure",
    "advantage",
)
_REPEATED_SPECIAL = re.compile(r"(<\|[A-Za-z_]+\|>)(?:\1)+")


def _task_key(meta: dict[str, Any], by: str) -> str:
    from datamodules.tasks import task_key

    return task_key(meta["problem_type"], meta["data_type"], by)


def media_thumbnail(meta: dict[str, Any], size: int = 224, frames: int = 4) -> Image.Image | None:
    """A small picture of a row's media: the (first) image, or a horizontal strip of up to ``frames``
    video frames spread over the clip. ``None`` for text-only rows or unreadable media."""
    paths = meta.get("media") or []
    if not paths:
        return None
    try:
        if meta.get("data_type") == "video":
            from datamodules.media import PixelBudget, load_video

            side = max(size // 2, 32)
            # fps≈0 makes the sampler take min_frames frames spread uniformly over the whole clip
            clip = load_video(
                paths[0],
                PixelBudget(32 * 32, side * side),
                factor=16,
                fps=1e-6,
                max_frames=frames,
                min_frames=frames,
            )
            strip = np.concatenate(list(clip.frames[:frames].permute(0, 2, 3, 1).numpy()), axis=1)
            img = Image.fromarray(strip)
            img.thumbnail((size * frames, size))
            return img
        with Image.open(paths[0]) as raw:
            img = raw.convert("RGB")
        img.thumbnail((size, size))
        return img
    except Exception:  # a broken file must not stop training; the row still carries its paths
        return None


def prompt_texts(rollouts: Any, rows: list[int], tokenizer: Any) -> list[str]:
    """The prompt of each row, decoded from the rollout batch (runs of image/video pad tokens collapsed)."""
    batch = rollouts.batch
    if tokenizer is None or "input_ids" not in batch:
        return [str(rollouts.meta[r].get("prompt", "")) for r in rows]
    out = []
    for r in rows:
        ids = batch["input_ids"][r]
        keep = rollouts.response_mask[r] == 0
        if batch.get("attention_mask") is not None:
            keep &= batch["attention_mask"][r].bool()
        text = tokenizer.decode(ids[keep].tolist(), skip_special_tokens=False)
        out.append(_REPEATED_SPECIAL.sub(r"\1", text))
    return out


class RolloutTableCallback(L.Callback):
    """Every ``every_n_steps`` RL steps, log up to ``max_rows`` of the step's rollouts.

    Reads ``pl_module.last_rollouts`` (set by `GRPOModule` after each step). Rows are drawn round-robin
    over task keys, so every task present shows up. Columns: step, task, problem_id, media (the image,
    or a strip of up to 4 video frames), prompt, response, the four reward components and the advantage.

    With a ``WandbLogger`` among ``trainer.loggers`` the rows go to a ``wandb.Table`` under ``key``;
    otherwise they are appended to ``<log_dir>/rollouts/rollouts.jsonl``, with each thumbnail saved as a
    PNG next to it. Only global rank zero logs (its own rollouts).

    Args:
        every_n_steps: log when the RL step (the loggers' step) is a multiple of this.
        max_rows: rows per table.
        key: W&B key of the table.
        thumbnail_size: longest side of an image thumbnail / height bound of a frame strip.
    """

    def __init__(
        self, every_n_steps: int = 50, max_rows: int = 16, key: str = "rollouts", thumbnail_size: int = 224
    ) -> None:
        if every_n_steps < 1 or max_rows < 1:
            raise ValueError("RolloutTableCallback: every_n_steps and max_rows must be >= 1")
        self.every_n_steps = every_n_steps
        self.max_rows = max_rows
        self.key = key
        self.thumbnail_size = thumbnail_size
        self._last_logged: int | None = None  # id() of the rollouts already logged

    # -- selection -----------------------------------------------------------------------------
    def select_rows(self, rollouts: dict[str, Any], step: int, by: str = "task") -> list[int]:
        """Indices into ``rollouts["meta"]``: round-robin over task keys, shuffled by ``step``."""
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, meta in enumerate(rollouts["meta"]):
            by_task[_task_key(meta, by)].append(i)
        rng = random.Random(step)
        queues = []
        for key in sorted(by_task):
            idx = list(by_task[key])
            rng.shuffle(idx)
            queues.append(idx)
        picked: list[int] = []
        while len(picked) < self.max_rows and any(queues):
            for q in queues:
                if q and len(picked) < self.max_rows:
                    picked.append(q.pop(0))
        return picked

    def build_rows(
        self, pl_module: L.LightningModule, rollouts: dict[str, Any], step: int
    ) -> list[dict[str, Any]]:
        """The table rows (plain values; ``media`` is a PIL image or ``None``)."""
        hparams = getattr(pl_module, "hparams", None) or {}
        by = hparams.get("task_key_by", "task")
        located = [(part, r) for part in rollouts["parts"] for r in part.rows]
        meta = rollouts["meta"]
        if len(located) != len(meta):
            raise ValueError(f"last_rollouts: {len(located)} kept rows in parts but {len(meta)} meta rows")
        tokenizer = getattr(getattr(pl_module, "backbone", None), "tokenizer", None)
        scores, advantages = rollouts["scores"], rollouts["advantages"]
        rows = []
        for i in self.select_rows(rollouts, step, by):
            part, r = located[i]
            m = meta[i]
            row = {
                "step": int(step),
                "task": _task_key(m, by),
                "problem_id": str(m.get("problem_id", "")),
                "media": media_thumbnail(m, self.thumbnail_size),
                "media_paths": [str(p) for p in m.get("media") or []],
                "prompt": prompt_texts(part.rollouts, [r], tokenizer)[0],
                "response": part.rollouts.responses[r],
                "answer": m.get("answer"),
                "advantage": float(advantages[i]),
            }
            for f in REWARD_FIELDS:
                row[f"reward_{f}"] = float(scores[f][i]) if f in scores else float("nan")
            rows.append(row)
        return rows

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero:
            return
        rollouts = getattr(pl_module, "last_rollouts", None)
        if not rollouts or id(rollouts) == self._last_logged:
            return  # nothing new this step (e.g. every group was filtered out)
        step = _logger_step(trainer)
        if step % self.every_n_steps:
            return
        self._last_logged = id(rollouts)
        rows = self.build_rows(pl_module, rollouts, step)
        if not rows:
            return
        wandb_loggers = [lg for lg in trainer.loggers if _is_wandb(lg)]
        if wandb_loggers:
            table = self.wandb_table(rows)
            for lg in wandb_loggers:
                lg.experiment.log({self.key: table, "trainer/global_step": step})
        else:
            self.write_jsonl(rows, _log_dir(trainer))

    def wandb_table(self, rows: list[dict[str, Any]]) -> Any:
        import wandb

        data = []
        for row in rows:
            media = row["media"]
            caption = ", ".join(Path(p).name for p in row["media_paths"])
            cell = wandb.Image(media, caption=caption) if media is not None else None
            data.append([cell if c == "media" else row[c] for c in COLUMNS])
        return wandb.Table(columns=list(COLUMNS), data=data)

    def write_jsonl(self, rows: list[dict[str, Any]], log_dir: Path) -> Path:
        folder = log_dir / "rollouts"
        (folder / "media").mkdir(parents=True, exist_ok=True)
        path = folder / "rollouts.jsonl"
        with path.open("a") as f:
            for n, row in enumerate(rows):
                record = {c: row[c] for c in COLUMNS if c != "media"}
                record["media"] = None
                if row["media"] is not None:
                    thumb = folder / "media" / f"step{row['step']:07d}_{n:02d}.png"
                    row["media"].save(thumb)
                    record["media"] = str(thumb.relative_to(folder))
                record["media_paths"] = row["media_paths"]
                record["answer"] = row["answer"]
                f.write(json.dumps(record, default=str) + "\n")
        return path


def _logger_step(trainer: L.Trainer) -> int:
    """The step the loggers use for this batch (one per RL step, also under manual optimisation)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step if step is not None else trainer.global_step)


def _is_wandb(logger: Any) -> bool:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover
        return False
    return isinstance(logger, WandbLogger)


def _log_dir(trainer: L.Trainer) -> Path:
    for logger in trainer.loggers:
        d = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if d:
            return Path(d)
    return Path(getattr(trainer, "log_dir", None) or trainer.default_root_dir)
