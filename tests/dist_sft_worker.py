"""One rank of a tiny-model SFT run; tests/test_distributed_sft.py launches it with torchrun (or as
one plain process for the reference) and reads back what it writes.

Every rank builds the same global batches (``rows_per_step`` rows per step from the synthetic SFT
manifest) and trains on its contiguous share; one process trains on the whole global batch.
Rank 0 writes ``losses.json`` (the logged global loss per step) and ``logprobs.pt`` (token
log-probabilities of a fixed batch after training, from the trained, possibly sharded, model).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy

from datamodules.collate import Collator, build_example
from datamodules.media import PixelBudget, stage_media
from datamodules.records import load_records
from lightning_modules.model.backbone import LoraSettings, VisionLanguageBackbone
from lightning_modules.sft import SFTModule
from lightning_modules.training.atomic_checkpoint import AtomicModelParallelStrategy
from lightning_modules.training.schedules import WarmupSchedule
from lightning_modules.training.sharding import ShardingSettings, is_sharded


def small_media(family: str):
    f = 32 if family == "qwen3_vl" else 28  # patch factor
    budget = {"image": PixelBudget(4 * f * f, 16 * f * f), "video_frame": PixelBudget(f * f, 4 * f * f)}
    return dataclasses.replace(stage_media("sft", family), max_frames=4, **budget)


def directory_digest(path: Path) -> str:
    """SHA-256 over the names and bytes of every file under ``path``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class CheckpointDigests(Callback):
    """Rank 0 records the digest of ``last.ckpt`` before each step, to ``digests.json`` at once (the run
    may die in a later save)."""

    def __init__(self, checkpoint: Path, out: Path) -> None:
        self.checkpoint, self.out, self.digests = checkpoint, out, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 0 and self.checkpoint.exists():
            self.digests[trainer.global_step] = directory_digest(self.checkpoint)
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "digests.json").write_text(json.dumps(self.digests))


def fail_shard_writes_from(step: int, trainer_ref: list) -> None:
    """This rank's DCP shard writes raise a full-disk error from global step ``step`` on."""
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    write = FileSystemWriter.write_data

    def failing_write(self, plan, planner):
        if trainer_ref and trainer_ref[0].global_step >= step:
            raise OSError(28, "No space left on device (injected)")
        return write(self, plan, planner)

    FileSystemWriter.write_data = failing_write


class GlobalLoss(Callback):
    """The logged ``train/loss`` (the global token mean) after each optimizer step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def global_batches(
    manifest: str,
    backbone,
    steps: int,
    rows: int,
    rank: int,
    world: int,
    skip: tuple[int, int, int] | None = None,
    pack_tokens: int | None = None,
) -> list[dict]:
    """``steps`` batches; step s holds records s*rows .. (s+1)*rows - 1, this rank its contiguous share.

    ``skip`` = (step, rank, world): at that step, that rank's share (under that world size) is left
    out: the rank itself gets a batch whose every row was skipped; one process drops those rows.
    """
    records = load_records(manifest, "sft")
    media, share = small_media(backbone.family), rows // world
    out = []
    for step in range(steps):
        indices = list(range(rank * share, (rank + 1) * share))
        if skip is not None and skip[0] == step:
            gone = range(skip[1] * rows // skip[2], (skip[1] + 1) * rows // skip[2])
            if world > 1 and rank == skip[1]:
                out.append({"meta": [], "skipped": {"bad_media/test": len(gone)}, "positions": []})
                continue
            indices = [i for i in indices if i not in gone]
        chosen = [records[(step * rows + i) % len(records)] for i in indices]
        collate = Collator(backbone.processor, "sft", pack_tokens=pack_tokens)
        out.append(collate([build_example(r, "sft", media) for r in chosen]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--family", default="qwen3_vl")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows-per-step", type=int, default=4)
    parser.add_argument(
        "--replicate", type=int, default=0, help="mesh (replicate, shard); 0: one process, no strategy"
    )
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shard-vision-blocks", action="store_true")
    parser.add_argument("--param-dtype", default="float32", help="the sharding's compute dtype")
    parser.add_argument(
        "--activation-checkpointing", action="store_true", help="the sharding option (composable)"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true", help="the backbone's (Hugging Face)")
    parser.add_argument(
        "--skip", type=int, nargs=3, default=None, help="step rank world: a rank's rows all skipped"
    )
    parser.add_argument("--checkpoint-dir", default=None, help="save checkpoints here")
    parser.add_argument(
        "--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: the last step)"
    )
    parser.add_argument(
        "--resume", default=None, help="a checkpoint to resume from (its steps are not replayed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of the tiny model")
    parser.add_argument("--save-last", action="store_true", help="only last.ckpt, rewritten at each save")
    parser.add_argument(
        "--fail-save-at-step", type=int, default=0, help="rank 1's shard writes fail from this step on"
    )
    parser.add_argument(
        "--plain-strategy", action="store_true", help="Lightning's ModelParallelStrategy (non-atomic saves)"
    )
    parser.add_argument(
        "--val-skip-rank", type=int, default=None, help="validate; this rank's rows all skipped"
    )
    parser.add_argument("--pack-tokens", type=int, default=None, help="pack each rank's rows (SFT packing)")
    parser.add_argument("--train-vision", action="store_true", help="train the vision tower and projector")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out)

    L.seed_everything(0, verbose=False)
    backbone = VisionLanguageBackbone(
        "tiny",
        family=args.family,
        seed=args.seed,
        tiny_vocab="synthetic",
        attn_implementation="sdpa",
        lora=LoraSettings(r=4, alpha=8) if args.lora else None,
        gradient_checkpointing=args.gradient_checkpointing,
        freeze_vision_tower=not args.train_vision,
        freeze_projector=not args.train_vision,
    )
    module = SFTModule(
        backbone,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0),
        schedule=WarmupSchedule("constant", 0.0),
        sharding=ShardingSettings(
            param_dtype=args.param_dtype,
            activation_checkpointing=args.activation_checkpointing,
            shard_vision_blocks=args.shard_vision_blocks,
        ),
    )
    skip = tuple(args.skip) if args.skip else None
    batches = global_batches(
        args.manifest, backbone, args.steps, args.rows_per_step, rank, world, skip, args.pack_tokens
    )
    done = torch.load(Path(args.resume) / "meta.pt", weights_only=False)["global_step"] if args.resume else 0
    # The list of batches is not a resumable loader: Lightning restarts it, so it starts where the run stopped.
    loader = torch.utils.data.DataLoader(batches[done:], batch_size=None, collate_fn=lambda b: b)
    strategy_class = ModelParallelStrategy if args.plain_strategy else AtomicModelParallelStrategy
    strategy = (
        strategy_class(data_parallel_size=args.replicate, tensor_parallel_size=args.shard)
        if args.replicate
        else "auto"
    )
    recorder = GlobalLoss()
    callbacks: list[Callback] = [recorder]
    if args.checkpoint_dir:
        every = args.checkpoint_every or args.steps
        if args.save_last:
            callbacks.append(
                ModelCheckpoint(args.checkpoint_dir, every_n_train_steps=every, save_top_k=0, save_last=True)
            )
            callbacks.append(CheckpointDigests(Path(args.checkpoint_dir) / "last.ckpt", out))
        else:
            name = "{step}" if args.checkpoint_every else "last"
            callbacks.append(
                ModelCheckpoint(args.checkpoint_dir, name, every_n_train_steps=every, save_top_k=-1)
            )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=strategy,
        max_steps=args.steps,
        gradient_clip_val=1.0,
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(args.checkpoint_dir),
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer_ref = [trainer]
    if args.fail_save_at_step and rank == 1:
        fail_shard_writes_from(args.fail_save_at_step, trainer_ref)
    val_loader = None
    if args.val_skip_rank is not None:  # one validation batch per rank at the end of the epoch
        val = global_batches(
            args.manifest, backbone, 1, args.rows_per_step, rank, world, (0, args.val_skip_rank, world)
        )
        val_loader = torch.utils.data.DataLoader(val, batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, loader, val_loader, ckpt_path=args.resume)

    # Log-probabilities of the first global batch, through the trained module (sharded or not).
    probe = global_batches(args.manifest, backbone, 1, args.rows_per_step, 0, 1)[0]
    module.backbone.eval()
    with torch.no_grad():
        logprobs = module.backbone.token_logprobs(probe, probe["labels"] != -100)
    if trainer.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        mesh = module.device_mesh
        run = {
            "losses": recorder.losses,
            "packed_rows": [len(b["pack_lengths"]) for b in batches if "pack_lengths" in b],
            "world_size": trainer.world_size,
            "mesh": None if mesh is None else list(mesh.shape),
            "sharded": is_sharded(module.backbone),
            "val_loss": float(trainer.callback_metrics["val/loss"])
            if "val/loss" in trainer.callback_metrics
            else None,
        }
        (out / "losses.json").write_text(json.dumps(run))
        torch.save(logprobs, out / "logprobs.pt")


if __name__ == "__main__":
    main()
