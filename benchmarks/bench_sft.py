"""SFT training benchmark: tokens/s and peak memory of `SFTModule` against a plain transformers `Trainer`.

Both sides train the same tiny Qwen3-VL (same seed, same frozen vision tower and projector) with
AdamW (lr 1e-5, no weight decay, no gradient accumulation) on the same pre-collated batches of the
synthetic suite's SFT rows, in the same order, on CPU:

- ours: a Lightning ``Trainer`` fitting `SFTModule` (token-mean NLL of the assistant tokens through
  chunked log-probs of the labelled positions only);
- peer: ``transformers.Trainer`` on the model's own forward with ``labels`` (logits over the whole
  vocabulary at every position, then HF's causal-LM loss).

Each side runs in a fresh subprocess (this script with ``--side``), so the peak RSS figures are
comparable. Throughput counts ``attention_mask`` tokens from the end of the warm-up step(s) to the
end of the last step. The first step's loss of both sides is printed as a check that they optimise
the same objective.

    python benchmarks/bench_sft.py --steps 8 --batch-size 4 --repeats 3
    python benchmarks/bench_sft.py --gpu-8b --steps 12 --batch-size 4   # CUDA: 8B-shaped Qwen3-VL, tokens/s + MFU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULT_PREFIX = "BENCH_SFT_RESULT "
PEER_KEYS = (
    "input_ids",
    "attention_mask",
    "mm_token_type_ids",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "labels",
)
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by substring of the CUDA device name.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
)



def lightning_clock(cuda: bool = False) -> Any:
    """A callback recording per-step end times, token counts and losses of a Lightning fit.

    Lightning is imported here, not at module level, so the peer's process never loads it.
    """
    import lightning as L

    class LightningClock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.tokens: list[int] = []
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.losses.append(float(outputs["loss"]))
            self.tokens.append(int(batch["attention_mask"].sum()))
            self.ends.append(time.perf_counter())

    return LightningClock()

def first(items: list) -> Any:
    """``collate_fn`` / ``data_collator`` for a loader over pre-collated batches (batch size 1)."""
    return items[0]


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    import psutil

    return mib(psutil.Process().memory_info().rss)


# --------------------------------------------------------------------------- data


def interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


def build_batches(n_batches: int, batch_size: int, seed: int, work: Path) -> tuple[list[dict[str, Any]], str]:
    """``n_batches`` SFT batches of ``batch_size`` rows, image and video rows alternating."""
    from datamodules.collate import Collator, build_example
    from datamodules.media import stage_media
    from datamodules.records import load_records
    from datamodules.synthetic import SYNTHETIC_TASKS, generate_suite
    from lightning_modules.processing import build_processor

    rows = n_batches * batch_size
    per_task = max(1, math.ceil(rows / len(SYNTHETIC_TASKS)))
    records = load_records(generate_suite(work / "suite", per_task, seed)["sft"], "sft")
    if len(records) < rows:
        raise RuntimeError(f"suite gave {len(records)} SFT rows, need {rows}")
    records = interleave([r for r in records if r.data_type == "image"], [r for r in records if r.data_type == "video"])[:rows]
    media = stage_media("sft", "qwen3_vl")
    collate = Collator(build_processor("qwen3_vl"), "sft")
    batches = [
        collate([build_example(r, "sft", media) for r in records[i : i + batch_size]]) for i in range(0, rows, batch_size)
    ]
    n_image = sum(r.data_type == "image" for r in records)
    return batches, f"{rows} SFT rows ({n_image} image, {rows - n_image} video), per_task={per_task}, seed={seed}"


def describe_batches(batches: list[dict[str, Any]]) -> str:
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    labels = [int((b["labels"] != -100).sum()) for b in batches]
    width = [b["input_ids"].shape[1] for b in batches]
    return (
        f"{len(batches)} batches x {batches[0]['input_ids'].shape[0]} rows; tokens/batch {min(tokens)}-{max(tokens)} "
        f"(mean {sum(tokens) / len(tokens):.0f}), padded width {min(width)}-{max(width)}, "
        f"label tokens/batch {min(labels)}-{max(labels)}"
    )


# --------------------------------------------------------------------------- sides (each in its own process)


def step_order(batches: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    return [batches[i % len(batches)] for i in range(steps)]


def summarise(name: str, ends: list[float], tokens: list[int], losses: list[float], warmup: int, rss_before: float) -> dict:
    seconds = ends[-1] - ends[warmup - 1]
    counted = sum(tokens[warmup:])
    return {
        "side": name,
        "steps": len(ends),
        "timed_steps": len(ends) - warmup,
        "seconds": seconds,
        "tokens": counted,
        "tokens_per_s": counted / seconds,
        "s_per_step": seconds / (len(ends) - warmup),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


def run_ours(batches: list[dict[str, Any]], steps: int, warmup: int, seed: int) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_modules.backbone import VisionLanguageBackbone
    from lightning_modules.sft import SFTModule

    module = SFTModule(VisionLanguageBackbone("tiny", seed=seed))  # default optimizer: AdamW lr 1e-5, wd 0
    loader = DataLoader(step_order(batches, steps), batch_size=1, shuffle=False, collate_fn=first)
    clock = lightning_clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    rss_before = rss_mib()
    trainer.fit(module, loader)
    return summarise("ours", clock.ends, clock.tokens, clock.losses, warmup, rss_before)


def run_peer(batches: list[dict[str, Any]], steps: int, warmup: int, seed: int, work: Path) -> dict:
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lightning_modules.backbone import VisionLanguageBackbone

    order = [{k: b[k] for k in PEER_KEYS if b.get(k) is not None} for b in step_order(batches, steps)]

    class Batches(Dataset):
        def __len__(self) -> int:
            return len(order)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return order[i]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    class LossTrainer(Trainer):
        losses: list[float] = []

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = super().training_step(*args, **kwargs)
            self.losses.append(float(loss))
            return loss

    model = VisionLanguageBackbone("tiny", seed=seed).hf_model  # same weights and frozen parts as ours
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        max_steps=steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        weight_decay=0.0,
        optim="adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.02 * steps),  # as WarmupSchedule("cosine", 0.02)
        train_sampling_strategy="sequential",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
    )
    clock = Clock()
    trainer = LossTrainer(model=model, args=args, train_dataset=Batches(), data_collator=first, callbacks=[clock])
    rss_before = rss_mib()
    trainer.train()
    tokens = [int(b["attention_mask"].sum()) for b in order]
    return summarise("peer", clock.ends, tokens, trainer.losses, warmup, rss_before)


def run_side(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = torch.load(args.data, weights_only=False)
    if args.side == "ours":
        result = run_ours(batches, args.steps, args.warmup, args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_peer(batches, args.steps, args.warmup, args.seed, Path(tmp))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def spawn(side: str, data: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", str(data)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise RuntimeError(f"--side {side} failed (exit {proc.returncode})")


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["tokens_per_s"])[(len(runs) - 1) // 2]


# --------------------------------------------------------------------------- 8B-shaped GPU run


def qwen3_vl_8b_config() -> Any:
    """Qwen3-VL-8B's shapes on `transformers.Qwen3VLConfig` defaults (random weights, no download)."""
    from transformers import Qwen3VLConfig

    text = {
        "vocab_size": 151_936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262_144,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "tie_word_embeddings": False,
    }
    vision = {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 4096,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)


def flops_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, N for MFU): N is the language model without its input embedding table, plus lm_head.

    The frozen vision tower only runs forward on patches, not on every token, so it is left out of 6·N.
    """
    total = sum(p.numel() for p in model.parameters())
    lm = model.model.language_model
    n = sum(p.numel() for p in lm.parameters()) - lm.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    return total, n


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"dense bf16 spec of {key}"
    return None, "unknown GPU: pass --peak-tflops"


def run_gpu_8b(args: argparse.Namespace) -> None:
    """`SFTModule` on an 8B-shaped Qwen3-VL in bf16 on CUDA: tokens/s and MFU (skips without CUDA)."""
    if not torch.cuda.is_available():
        print("--gpu-8b: skipped, CUDA is not available on this machine (nothing measured).")
        return
    with tempfile.TemporaryDirectory() as tmp:
        batches, what = build_batches(args.batches, args.batch_size, args.seed, Path(tmp))
    print(f"data: {what}\n  {describe_batches(batches)}")
    r = train_config(qwen3_vl_8b_config(), batches, args.steps, args.warmup, args.seed, "cuda")
    print(
        f"model: Qwen3-VL-8B-shaped, random bf16 weights, {r['attn']}, gradient checkpointing, fused AdamW "
        f"(bf16 states); {r['params'] / 1e9:.2f}B params, {r['trainable'] / 1e9:.2f}B trainable "
        f"(vision tower + projector frozen); built in {r['build_s']:.0f}s"
    )
    name = torch.cuda.get_device_name()
    peak, source = peak_tflops(name, args.peak_tflops)
    achieved = 6 * r["n_flops"] * r["tokens_per_s"] / 1e12
    mfu = f"{achieved / peak:.1%}" if peak else "n/a"
    print(f"\nGPU: {name}, torch {torch.__version__}, {args.steps} steps ({args.warmup} warm-up)")
    print(f"  {'tokens/s':>10} {'s/step':>8} {'TFLOP/s':>9} {'MFU':>7} {'peak mem':>10}")
    print(
        f"  {r['tokens_per_s']:>10.0f} {r['s_per_step']:>8.3f} {achieved:>9.1f} {mfu:>7} "
        f"{mib(torch.cuda.max_memory_allocated()) / 1024:>8.1f}GiB"
    )
    print(f"  MFU = 6 * N * tokens/s / peak, N = {r['n_flops'] / 1e9:.2f}B (language model without input embeddings, + lm_head)")
    print(f"  peak = {peak} TFLOP/s ({source}); last loss {r['last_loss']:.4f}")


def train_config(config: Any, batches: list[dict[str, Any]], steps: int, warmup: int, seed: int, device: str) -> dict:
    """Fit `SFTModule` around a randomly initialised bf16 model of ``config`` on ``device`` (``cuda`` or ``cpu``)."""
    import functools

    import lightning as L
    from torch.utils.data import DataLoader
    from transformers import AutoModelForImageTextToText

    from lightning_modules.backbone import VisionLanguageBackbone, resolve_attention
    from lightning_modules.sft import SFTModule

    cuda = device == "cuda"
    attn = resolve_attention("auto")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    total, n_flops = flops_params(model)
    backbone = VisionLanguageBackbone("tiny", seed=seed)  # for its processor-side settings; its tiny model is swapped out
    backbone.model = model
    backbone.set_trainable(vision_tower=False, projector=False)
    build_s = time.perf_counter() - t0

    clock = lightning_clock(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    # Fused AdamW: no foreach temporaries the size of the weights (those alone would not fit an 80 GB card).
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-5, weight_decay=0.0, fused=cuda or None)
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        precision="bf16-true",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    loader = DataLoader(step_order(batches, steps), batch_size=1, shuffle=False, collate_fn=first)
    trainer.fit(SFTModule(backbone, optimizer=optimizer), loader)
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    return {
        "attn": attn,
        "params": total,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "n_flops": n_flops,
        "build_s": build_s,
        "tokens_per_s": sum(clock.tokens[warmup:]) / seconds,
        "s_per_step": seconds / (len(clock.ends) - warmup),
        "last_loss": clock.losses[-1],
    }


# --------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side (warm-up included)")
    ap.add_argument("--batch-size", type=int, default=4, help="rows per batch")
    ap.add_argument("--batches", type=int, default=8, help="distinct pre-collated batches, cycled")
    ap.add_argument("--warmup", type=int, default=1, help="leading steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per side, order alternating; median reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--gpu-8b", action="store_true", help="8B-shaped Qwen3-VL on CUDA (ours only): tokens/s and MFU")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)")
    ap.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    if args.side:
        run_side(args)
        return
    if args.gpu_8b:
        run_gpu_8b(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        batches, what = build_batches(args.batches, args.batch_size, args.seed, Path(tmp))
        data = Path(tmp) / "batches.pt"
        torch.save(batches, data)
        print(f"data: {what}, collated once in {time.perf_counter() - t:.1f}s")
        print(f"  {describe_batches(batches)}")
        print(f"  {args.steps} steps per side ({args.warmup} warm-up), each side in a fresh process, torch threads: "
              f"{args.threads or torch.get_num_threads()}, cpus: {os.cpu_count()}")
        runs: dict[str, list[dict]] = {"ours": [], "peer": []}
        for r in range(args.repeats):  # alternate the order, so drifting load on a shared box hits both alike
            for side in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
                runs[side].append(spawn(side, data, args))

    ours, peer = (median_run(runs[side]) for side in ("ours", "peer"))
    if args.repeats > 1:
        for side in ("ours", "peer"):
            print(f"{side} tokens/s per run: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs[side]))
    print(f"\n{'side':<6} {'tokens/s':>9} {'s/step':>7} {'peak RSS':>10} {'RSS before fit':>15} {'fit growth':>11} {'loss step 1':>12}")
    for r in (ours, peer):
        print(
            f"{r['side']:<6} {r['tokens_per_s']:>9.0f} {r['s_per_step']:>7.3f} {r['peak_rss_mib']:>7.0f}MiB "
            f"{r['rss_before_mib']:>12.0f}MiB {r['peak_rss_mib'] - r['rss_before_mib']:>8.0f}MiB {r['first_loss']:>12.5f}"
        )
    ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
    growth = (ours["peak_rss_mib"] - ours["rss_before_mib"]) / max(peer["peak_rss_mib"] - peer["rss_before_mib"], 1e-9)
    print(
        f"\nours/peer: tokens/s {ratio:.2f}x (target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}); "
        f"peak RSS {ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f}x; growth during fit {growth:.2f}x"
    )
    print(f"first-step loss |ours - peer| = {abs(ours['first_loss'] - peer['first_loss']):.2e}")


if __name__ == "__main__":
    main()
