"""A GRPO fit on fixed global batches, in one process or several (run by tests/test_distributed_grpo.py).

    python -m tests.distributed_grpo_run OUT WORLD STRATEGY(ddp|fsdp2) [--engine hf|fake-vllm] [--repeats K]
        [--ckpt-dir DIR] [--resume CKPT --skip STEPS] [--drop STEP] [--images]   (from the repository root)

``--engine hf`` samples answers instead (benchmarks/bench_grpo_ranks.py); ``--engine fake-vllm`` runs
`VLLMColocateEngine` on a recording fake of ``vllm.LLM`` (which answers as the scripted engine does)
and writes each rank's engine calls to OUT/engine_calls.rank{r}.json. ``--images`` gives every
prompt an image and trains the vision tower and projector.

Each RL step has a fixed global batch of prompts; rank r gets its share (rows r*B ... r*B+B-1), one
process all of it, in the same order. A scripted rollout engine answers every prompt the same way in
every run, and toy rewards make some groups all-0 (filtered) and the rest mixed, so the runs differ only
in how the work is split over ranks. Rank 0 writes, per RL step, the global advantages, each update's
loss and the EMA state to OUT/steps.json.
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from PIL import Image
from torch.utils.data import DataLoader

import rewards
from callbacks.task_reward_stats import TaskRewardStatsCallback
from datamodules.collate import Collator, build_example
from datamodules.media import stage_media
from datamodules.records import load_records
from lightning_modules.grpo import GRPOModule
from lightning_modules.model.backbone import VisionLanguageBackbone
from lightning_modules.rl import vllm_engine
from lightning_modules.rl.rollout import (
    HFGenerateEngine,
    RolloutEngine,
    Rollouts,
    layout_rollouts,
    pad_completions,
)
from lightning_modules.training.sharding import ShardingSettings
from tests.fake_vllm import fake_llm_factory

N = 4  # rollouts per prompt
# Per step, the global batch as (problem_id, answer) pairs; "zero" groups score 0 and are filtered.
# Step 0: rank 0 of 2 (rows 0-1) keeps no group, rank 1 keeps both. Step 1: every group is kept.
STEPS = [
    [(0, "zero"), (1, "zero"), (2, "mix"), (3, "mix")],
    [(4, "mix"), (5, "mix"), (6, "mix"), (7, "mix")],
]


def toy_accuracy(pred: str, gt: str, variant: str = "released") -> float:
    return 0.0 if gt == "zero" else (zlib.crc32(pred.encode()) % 997) / 996


class ScriptedEngine(RolloutEngine):
    """Answers row j of prompt p with ``<answer>{p}.{j}</answer>`` (the same text in every run)."""

    max_new_tokens = 16

    def __call__(
        self, backbone: VisionLanguageBackbone, prompts: dict[str, Any], n: int, seed: int = 0
    ) -> Rollouts:
        tok = backbone.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        texts = [f"<answer>{m['problem_id']}.{j}</answer>" for m in prompts["meta"] for j in range(n)]
        ids = [tok.encode(t, add_special_tokens=False) + [end] for t in texts]
        return layout_rollouts(backbone, prompts, pad_completions(ids, tok.pad_token_id), n)


class FixedBatches(L.LightningDataModule):
    """This rank's share of each step's global batch, collated (prompt lengths are equal)."""

    def __init__(
        self, manifest: Path, processor: Any, repeats: int = 1, skip: int = 0, drop: int = -1
    ) -> None:
        super().__init__()
        self.manifest, self.processor, self.repeats, self.skip, self.drop = (
            manifest,
            processor,
            repeats,
            skip,
            drop,
        )
        self.batches: list[dict[str, Any]] = []

    def setup(self, stage: str) -> None:  # after the process group exists
        records = {str(r.problem_id): r for r in load_records(self.manifest, "rl")}
        collate, media = Collator(self.processor, "rl"), stage_media("rl")
        rank, world = self.trainer.global_rank, self.trainer.world_size
        for k, step in enumerate(STEPS * self.repeats):
            if k < self.skip:
                continue
            if k == self.drop:  # the first half of the global batch had only bad media
                step = step[len(step) // 2 :]
                if world > 1 and rank == 0:
                    self.batches.append(
                        {"meta": [], "skipped": {"bad_media": 2}}
                    )  # as the data module yields
                    continue
                rank, world = (
                    rank - (world > 1),
                    world - (world > 1),
                )  # the others share the rest (2 ranks here)
            share = step[rank * len(step) // world : (rank + 1) * len(step) // world]
            self.batches.append(collate([build_example(records[str(pid)], "rl", media) for pid, _ in share]))
            rank, world = self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, shuffle=False)


class StepCheckpoint(L.Callback):
    """A checkpoint after every RL step, named by the RL steps done (``rl_step=K.ckpt``)."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath, self.rl_steps = dirpath, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rl_steps += 1
        trainer.save_checkpoint(self.dirpath / f"rl_step={self.rl_steps}.ckpt")


class StepRecorder(L.Callback):
    def __init__(self, out: Path, ema: TaskRewardStatsCallback) -> None:
        self.out, self.ema, self.steps = out, ema, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        summary = getattr(pl_module, "last_step", None) or {}
        self.steps.append({
            "advantages": [float(a) for a in summary.get("advantages", [])],
            "update_losses": summary.get("update_losses", []),
            "kept": summary.get("kept", []),
            "ema": self.ema.ema.state_dict(),
            "step_seconds": summary.get("step_seconds"),
            "agreement_seconds": summary.get("agreement_seconds"),
        })  # fmt: skip
        if trainer.is_global_zero:
            (self.out / "steps.json").write_text(json.dumps(self.steps))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("world", type=int)
    ap.add_argument("strategy")
    ap.add_argument("--engine", choices=("scripted", "hf", "fake-vllm"), default="scripted")
    ap.add_argument("--repeats", type=int, default=1, help="the steps' batches, this many times over")
    ap.add_argument("--ckpt-dir", type=Path, help="save a checkpoint after every RL step")
    ap.add_argument("--resume", help="checkpoint to resume from")
    ap.add_argument("--skip", type=int, default=0, help="RL steps the resumed checkpoint has done")
    ap.add_argument("--drop", type=int, default=-1, help="in this RL step, rank 0's rows all have bad media")
    ap.add_argument("--images", action="store_true", help="an image per prompt; the vision tower trains")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    out, world = args.out, args.world
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rewards.register_reward("numerical", data_type="image", structure=0.0, check_answer=lambda gt: None)(
        toy_accuracy
    )
    manifest = out / "rl.json"
    records = [
        {"problem_id": pid, "problem": f"Question {pid % 10}: how many?", "data_type": "image",
         "problem_type": "numerical", "options": [], "data_source": "toy", "answer": f"<answer>{answer}</answer>"}
        for step in STEPS for pid, answer in step
    ]  # fmt: skip
    if args.images:
        image = out / "image.png"
        Image.fromarray((torch.arange(64 * 64 * 3) % 251).reshape(64, 64, 3).to(torch.uint8).numpy()).save(
            image
        )
        for r in records:
            r["images"], r["problem"] = [str(image)], "<image>" + r["problem"]
    manifest.write_text(json.dumps(records))
    frozen = not args.images
    backbone = VisionLanguageBackbone("tiny", seed=0, freeze_vision_tower=frozen, freeze_projector=frozen)
    calls: list = []
    if args.engine == "fake-vllm":  # VLLMColocateEngine on a recording fake of vllm.LLM
        vllm_engine.build_llm = fake_llm_factory(calls, {})
        vllm_engine.make_sampling_params = dict
        engine: RolloutEngine = vllm_engine.VLLMColocateEngine(max_new_tokens=16)
    else:
        engine = ScriptedEngine() if args.engine == "scripted" else HFGenerateEngine(max_new_tokens=16)
    module = GRPOModule(
        backbone, rollout=engine, rollouts_per_prompt=N, advantage="ema_grpo", filter_groups=True,
        max_resample=0, prompts_per_update=1, micro_batch_size=8, seed=0,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.0),
        sharding=ShardingSettings(param_dtype="float32", reduce_dtype="float32"),
    )  # fmt: skip
    stats = TaskRewardStatsCallback()
    callbacks: list[L.Callback] = [stats, StepRecorder(out, stats)]
    if args.ckpt_dir is not None:
        callbacks.append(StepCheckpoint(args.ckpt_dir))
    strategy: Any = args.strategy
    if strategy == "fsdp2":  # FSDP2 over every rank (no tensor parallelism)
        strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=world)
    trainer = L.Trainer(
        accelerator="cpu", devices=world, strategy=strategy if world > 1 else "auto", max_steps=1000,
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=callbacks,
    )  # fmt: skip
    dm = FixedBatches(manifest, backbone.processor, args.repeats, args.skip, args.drop)
    trainer.fit(module, datamodule=dm, ckpt_path=args.resume)
    (out / f"engine_calls.rank{trainer.global_rank}.json").write_text(json.dumps(calls))
    if trainer.is_global_zero:
        print(f"MEMBERS {trainer.world_size} done")


if __name__ == "__main__":
    main()
