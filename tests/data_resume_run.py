"""Which records each rank trains on, per step, through the real `OneThinkerDataModule` under DDP
(run by tests/test_distributed_data.py):

    python -m tests.data_resume_run SUITE OUT WORLD [--resume CKPT]   (from the repository root)

Each step reads the rank's train batch and one batch of the resample stream (as GRPO's online
filter does); rows with unreadable media are skipped and counted. A checkpoint is saved after every step; Lightning stores rank 0's data-module state,
which must put every rank back where it was. Rank r writes OUT/rank{r}.json: per step, the
problem ids of its train batch and of its resample batch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.datamodule import OneThinkerDataModule
from lightning_modules.model.processing import build_processor

STEPS = 4


def ids(batch: dict[str, Any]) -> list[str]:
    return [f"{m['data_type']}/{m['problem_id']}" for m in batch["meta"]]


class RecordingModule(L.LightningModule):
    """A one-weight model whose steps record the rows they were given."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.out, self.seen, self._resample = out, [], None

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self._resample is None:
            self._resample = self.trainer.datamodule.resample_batches()
        with torch.random.fork_rng(devices=[]):
            extra = next(self._resample)
        skipped = sum(batch["skipped"].values())
        self.seen.append(
            {"step": self.global_step + 1, "train": ids(batch), "resample": ids(extra), "skipped": skipped}
        )
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))
        return (self.weight**2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("world", type=int)
    ap.add_argument("--resume")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    dm = OneThinkerDataModule(
        mode="rl", train_manifests=[str(args.suite / "rl.json")], global_batch_size=2 * args.world,
        image_pixels=(1024, 4096), video_pixels=(1024, 2048), max_frames=2, seed=3, on_bad_media="skip",
    )  # fmt: skip
    dm.connect(build_processor("qwen3_vl"))
    checkpoints = ModelCheckpoint(args.out / "ckpt", "{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.world, strategy="ddp" if args.world > 1 else "auto", max_steps=STEPS,
        logger=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        callbacks=[checkpoints],
    )  # fmt: skip
    trainer.fit(RecordingModule(args.out), datamodule=dm, ckpt_path=args.resume)
    if trainer.is_global_zero:
        print(f"MEMBERS {trainer.world_size} done")


if __name__ == "__main__":
    main()
