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

``--gpu-8b`` runs both sides on CUDA instead, on a randomly initialised Qwen3-VL-8B-shaped model in bf16
(gradient checkpointing, fused AdamW with bf16 states), each in a fresh process, and reports tokens/s,
peak GPU memory and MFU of each side and their ratio.

``--pack-tokens N`` collates each batch's conversations packed into rows of at most N tokens
(`datamodules.collate.Collator(..., pack_tokens=N)`); only ours runs packed batches (the peer has no
per-sample attention here), so it goes with ``--sides ours``. ``--liger`` takes Liger-Kernel's fused
linear cross-entropy: ours through the backbone's ``fused_loss="liger"`` (without it, ours is pinned to
``fused_loss="torch"`` where the backbone has that argument), the peer through ``use_liger_kernel``.
Each run of ours reports how many times Liger's kernel was called, so a missing wiring shows as 0.

    python benchmarks/bench_sft.py --steps 8 --batch-size 4 --repeats 3
    python benchmarks/bench_sft.py --gpu-8b --steps 12 --batch-size 4   # CUDA: 8B-shaped Qwen3-VL, ours vs peer
    python benchmarks/bench_sft.py --gpu-8b --batch-size 32 --pack-tokens 16384 --liger --sides ours
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

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
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


def backbone_loss_kwargs(liger: bool) -> dict[str, str]:
    """``fused_loss`` for `VisionLanguageBackbone`: ``liger`` with ``--liger``, else ``torch`` (so a run
    without ``--liger`` is today's path even where ``auto`` would pick Liger); empty, with a warning for
    ``--liger``, while the backbone has no such argument."""
    import inspect

    from lightning_modules.model.backbone import VisionLanguageBackbone

    if "fused_loss" in inspect.signature(VisionLanguageBackbone.__init__).parameters:
        return {"fused_loss": "liger" if liger else "torch"}
    if liger:
        print(
            "--liger: VisionLanguageBackbone has no fused_loss argument yet; ours runs the torch path",
            file=sys.stderr,
        )
    return {}


def count_liger_calls() -> Any:
    """Counts calls of Liger's fused linear cross-entropy in this process (through
    `lightning_modules.model.liger_logprobs`, which looks the function up at each call). Returns a reader of
    the count; without liger-kernel the count stays 0."""
    calls = [0]
    try:
        import liger_kernel.transformers.functional as functional
    except Exception:
        return lambda: calls[0]
    original = functional.liger_fused_linear_cross_entropy

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    functional.liger_fused_linear_cross_entropy = counted
    return lambda: calls[0]


# --------------------------------------------------------------------------- data


def interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


def build_batches(
    n_batches: int, batch_size: int, seed: int, work: Path, pack_tokens: int | None = None
) -> tuple[list[dict[str, Any]], str]:
    """``n_batches`` SFT batches of ``batch_size`` rows, image and video rows alternating; with
    ``pack_tokens`` each batch's conversations are packed into rows of at most that many tokens."""
    from datamodules.collate import Collator, build_example
    from datamodules.media import stage_media
    from datamodules.records import load_records
    from datamodules.synthetic import SYNTHETIC_TASKS, generate_suite
    from lightning_modules.model.processing import build_processor

    rows = n_batches * batch_size
    per_task = max(1, math.ceil(rows / len(SYNTHETIC_TASKS)))
    records = load_records(generate_suite(work / "suite", per_task, seed)["sft"], "sft")
    if len(records) < rows:
        raise RuntimeError(f"suite gave {len(records)} SFT rows, need {rows}")
    records = interleave(
        [r for r in records if r.data_type == "image"], [r for r in records if r.data_type == "video"]
    )[:rows]
    media = stage_media("sft", "qwen3_vl")
    collate = Collator(build_processor("qwen3_vl"), "sft", pack_tokens=pack_tokens)
    batches = [
        collate([build_example(r, "sft", media) for r in records[i : i + batch_size]])
        for i in range(0, rows, batch_size)
    ]
    n_image = sum(r.data_type == "image" for r in records)
    return (
        batches,
        f"{rows} SFT rows ({n_image} image, {rows - n_image} video), per_task={per_task}, seed={seed}"
        + (f", packed into rows of at most {pack_tokens} tokens" if pack_tokens else ""),
    )


def describe_batches(batches: list[dict[str, Any]]) -> str:
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    labels = [int((b["labels"] != -100).sum()) for b in batches]
    width = [b["input_ids"].shape[1] for b in batches]
    rows = [b["input_ids"].shape[0] for b in batches]
    positions = sum(b["input_ids"].numel() for b in batches)
    packed = ""
    if batches[0].get("pack_lengths") is not None:
        samples = [sum(len(r) for r in b["pack_lengths"]) for b in batches]
        packed = f", packed: {min(samples)}-{max(samples)} samples/batch"
    skipped = sum(sum(b.get("skipped", {}).values()) for b in batches)
    return (
        f"{len(batches)} batches x {min(rows)}-{max(rows)} rows{packed}; tokens/batch {min(tokens)}-{max(tokens)} "
        f"(mean {sum(tokens) / len(tokens):.0f}), row width {min(width)}-{max(width)}, "
        f"padding {1 - sum(tokens) / positions:.0%} of positions, "
        f"label tokens/batch {min(labels)}-{max(labels)}"
        + (f", {skipped} samples skipped" if skipped else "")
    )


# --------------------------------------------------------------------------- sides (each in its own process)


def step_order(batches: list[dict[str, Any]], steps: int) -> list[dict[str, Any]]:
    return [batches[i % len(batches)] for i in range(steps)]


def summarise(
    name: str, ends: list[float], tokens: list[int], losses: list[float], warmup: int, rss_before: float
) -> dict:
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


def run_ours(batches: list[dict[str, Any]], steps: int, warmup: int, seed: int, liger: bool = False) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_modules.model.backbone import VisionLanguageBackbone
    from lightning_modules.sft import SFTModule

    liger_calls = count_liger_calls() if liger else (lambda: 0)
    # default optimizer: AdamW lr 1e-5, wd 0
    module = SFTModule(VisionLanguageBackbone("tiny", seed=seed, **backbone_loss_kwargs(liger)))
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
    return {
        **summarise("ours", clock.ends, clock.tokens, clock.losses, warmup, rss_before),
        "liger_calls": liger_calls(),
    }


def listed(items: list[dict[str, Any]]) -> Any:
    """A map-style Dataset over pre-collated batches (what the peer's Trainer iterates)."""
    from torch.utils.data import Dataset

    class Listed(Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return items[i]

    return Listed()


def loss_recording_trainer() -> Any:
    """``transformers.Trainer`` that keeps each step's loss (to compare the first losses with ours)."""
    from transformers import Trainer

    class LossTrainer(Trainer):
        losses: list[float] = []

        def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            loss = super().training_step(*args, **kwargs)
            self.losses.append(float(loss))
            return loss

    return LossTrainer


def run_peer(
    batches: list[dict[str, Any]], steps: int, warmup: int, seed: int, work: Path, liger: bool = False
) -> dict:
    from transformers import TrainerCallback, TrainingArguments

    from lightning_modules.model.backbone import VisionLanguageBackbone

    order = [{k: b[k] for k in PEER_KEYS if b.get(k) is not None} for b in step_order(batches, steps)]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    LossTrainer = loss_recording_trainer()

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
        use_liger_kernel=liger,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
    )
    clock = Clock()
    trainer = LossTrainer(
        model=model, args=args, train_dataset=listed(order), data_collator=first, callbacks=[clock]
    )
    rss_before = rss_mib()
    trainer.train()
    tokens = [int(b["attention_mask"].sum()) for b in order]
    return summarise("peer", clock.ends, tokens, trainer.losses, warmup, rss_before)


def run_side(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_8b:
        print(RESULT_PREFIX + json.dumps(run_gpu_side(args)), flush=True)
        return
    batches = torch.load(args.data, weights_only=False)
    if args.side == "ours":
        result = run_ours(batches, args.steps, args.warmup, args.seed, args.liger)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_peer(batches, args.steps, args.warmup, args.seed, Path(tmp), args.liger)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def spawn(side: str, data: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", str(data)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.liger:
        cmd += ["--liger"]
    if args.gpu_8b:
        cmd += ["--gpu-8b", "--profile-step", str(args.profile_step)] + (
            ["--gpu-smoke"] if args.gpu_smoke else []
        )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {
                **json.loads(line[len(RESULT_PREFIX) :]),
                "process_seconds": time.perf_counter() - started,
            }
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
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
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
    n = (
        sum(p.numel() for p in lm.parameters())
        - lm.embed_tokens.weight.numel()
        + model.lm_head.weight.numel()
    )
    return total, n


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"dense bf16 spec of {key}"
    return None, "unknown GPU: pass --peak-tflops"


PIXEL_KEYS = ("pixel_values", "pixel_values_videos")


def pack_pixels(batch: dict[str, Any]) -> dict[str, Any]:
    """Pixel tensors as the uint8 values they were normalised from ((x / 255 - 0.5) / 0.5), when exact:
    a quarter of the bytes in a ``--batches-file``."""
    out = dict(batch)
    for key in PIXEL_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            x = (value.double() * 0.5 + 0.5) * 255
            r = x.round()
            if float((x - r).abs().max()) < 1e-3 and float(r.min()) >= 0 and float(r.max()) <= 255:
                out[key] = {"uint8": r.to(torch.uint8)}
    return out


def unpack_pixels(batch: dict[str, Any]) -> dict[str, Any]:
    out = dict(batch)
    for key in PIXEL_KEYS:
        if isinstance(batch.get(key), dict):
            out[key] = (batch[key]["uint8"].float() / 255 - 0.5) / 0.5
    return out


def load_or_build_batches(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], str]:
    """The pre-collated batches: from ``--batches-file`` if it exists, else collated now (and saved there)."""
    if args.batches_file is not None and args.batches_file.is_file():
        saved = torch.load(args.batches_file, weights_only=False)
        batches = [unpack_pixels(b) for b in saved["batches"]]
        what = saved["what"] + f" (loaded from {args.batches_file.name})"
        packed = saved.get("pack_tokens")
        if packed == args.pack_tokens:
            return batches, what
        if packed is None:  # padded batches packed here: one carried file serves both layouts
            return [pack_padded(b, args.pack_tokens) for b in batches], what + (
                f", packed on load into rows of at most {args.pack_tokens} tokens"
            )
        raise SystemExit(
            f"{args.batches_file} was collated with pack_tokens={packed}, not --pack-tokens "
            f"{args.pack_tokens}: pass the matching flag, or a file of padded batches"
        )
    batches, what = build_batches(args.batches, args.batch_size, args.seed, work, args.pack_tokens)
    if args.batches_file is not None:
        args.batches_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"batches": [pack_pixels(b) for b in batches], "what": what, "pack_tokens": args.pack_tokens},
            args.batches_file,
        )
    return batches, what


def pack_padded(batch: dict[str, Any], budget: int) -> dict[str, Any]:
    """A padded SFT batch packed into rows of at most ``budget`` tokens: `datamodules.packing.pack_batch`,
    the step `Collator(..., pack_tokens=budget)` applies to its padded output (every sample must fit)."""
    from datamodules.packing import pack_batch

    pads = batch["input_ids"][batch["attention_mask"] == 0]
    return pack_batch(batch, budget, int(pads[0]) if pads.numel() else 0)


def side_order(args: argparse.Namespace, repeat: int) -> list[str]:
    """``--sides`` in the given order on even repeats, reversed on odd ones (drifting load hits both alike)."""
    return args.sides if repeat % 2 == 0 else args.sides[::-1]


def write_json(
    path: Path | None, args: argparse.Namespace, what: str, runs: dict[str, list[dict]], **extra: Any
) -> None:
    """``--json-out``: the settings, every run and the median run per side (read by gpu_check_throughput)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    medians = {side: median_run(r) for side, r in runs.items() if r}
    path.write_text(
        json.dumps({"args": settings, "data": what, "runs": runs, "median": medians, **extra}, indent=1)
    )


def run_gpu_8b(args: argparse.Namespace) -> None:
    """`SFTModule` vs ``transformers.Trainer`` on an 8B-shaped Qwen3-VL in bf16 on CUDA, each side in a
    fresh process on the same batches: tokens/s, peak GPU memory and MFU (skips without CUDA)."""
    if not torch.cuda.is_available() and not args.gpu_smoke:
        print("--gpu-8b: skipped, CUDA is not available on this machine (nothing measured).")
        return
    with tempfile.TemporaryDirectory() as tmp:
        batches, what = load_or_build_batches(args, Path(tmp))
        data = Path(tmp) / "batches.pt"
        torch.save(batches, data)
        print(f"data: {what}\n  {describe_batches(batches)}", flush=True)
        runs: dict[str, list[dict]] = {side: [] for side in args.sides}
        for i in range(args.repeats):
            for side in side_order(args, i):
                r = spawn(side, data, args)
                runs[side].append(r)
                print(
                    f"[{side}] {r['tokens_per_s']:.0f} tokens/s, {r['s_per_step']:.3f} s/step, peak "
                    f"{r['peak_gpu_gib']:.1f} GiB allocated ({r['peak_reserved_gib']:.1f} reserved), first loss "
                    f"{r['first_loss']:.5f}; process {r['process_seconds']:.0f} s (model built in {r['build_s']:.0f} s, "
                    f"fit {r['fit_s']:.0f} s); loss path {r['fused_loss']}"
                    + (f", Liger calls {r['liger_calls']}" if "liger_calls" in r else "")
                    + "; step seconds "
                    + ", ".join(f"{x:.2f}" for x in r["step_seconds"]),
                    flush=True,
                )
                print_profile(side, r.get("profile"))
    medians = [median_run(runs[side]) for side in args.sides]
    first = medians[0]
    peak, source = peak_tflops(first["device"], args.peak_tflops)
    mfu = {r["side"]: 6 * r["n_flops"] * r["tokens_per_s"] / 1e12 / peak if peak else None for r in medians}
    write_json(args.json_out, args, what, runs, mfu=mfu, peak_tflops=peak, peak_source=source)
    print(
        f"\nmodel: {first['model']}, random bf16 weights, {first['attn']}, gradient checkpointing (non-reentrant), "
        f"fused AdamW (bf16 states), lr 1e-5, wd 0, cosine; {first['params'] / 1e9:.2f}B params, "
        f"{first['trainable'] / 1e9:.2f}B trainable (vision tower + projector frozen)"
    )
    print(
        f"GPU: {first['device']}, torch {first['torch']}, transformers {first['transformers']}, "
        f"{args.steps} steps per side ({args.warmup} warm-up"
        + (f", step {args.profile_step} profiled and left out" if args.profile_step >= 0 else "")
        + f"), median of {args.repeats}"
    )
    print(
        f"  {'side':<5} {'tokens/s':>10} {'s/step':>8} {'TFLOP/s':>9} {'MFU':>7} {'peak alloc':>11} {'peak reserved':>14} {'loss step 1':>12}"
    )
    for r in medians:
        achieved = 6 * r["n_flops"] * r["tokens_per_s"] / 1e12
        shown = f"{achieved / peak:.1%}" if peak else "n/a"
        print(
            f"  {r['side']:<5} {r['tokens_per_s']:>10.0f} {r['s_per_step']:>8.3f} {achieved:>9.1f} {shown:>7} "
            f"{r['peak_gpu_gib']:>8.1f}GiB {r['peak_reserved_gib']:>11.1f}GiB {r['first_loss']:>12.5f}"
        )
    if len(medians) == 2:
        ours, peer = (median_run(runs[side]) for side in ("ours", "peer"))
        ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
        print(
            f"  ours/peer: tokens/s {ratio:.2f}x; peak allocated {ours['peak_gpu_gib'] / max(peer['peak_gpu_gib'], 1e-9):.2f}x; "
            f"first-step loss |ours - peer| = {abs(ours['first_loss'] - peer['first_loss']):.2e}"
        )
    if args.liger and "ours" in runs and not median_run(runs["ours"]).get("liger_calls"):
        print(
            "  NOTE: --liger, but ours never called Liger's kernel (backbone wiring missing or its condition unmet)"
        )
    print(
        f"  MFU = 6 * N * tokens/s / peak, N = {first['n_flops'] / 1e9:.2f}B (language model without input embeddings, "
        f"+ lm_head); tokens = attention_mask tokens (padding and pack tails not counted); "
        f"peak = {peak} TFLOP/s ({source})"
    )


def gpu_config(args: argparse.Namespace) -> tuple[Any, str, str]:
    """(config, name, device) of the GPU measurement; ``--gpu-smoke``: the tiny config on CPU (code-path check)."""
    if args.gpu_smoke:
        from lightning_modules.model.presets import tiny_config

        return tiny_config("qwen3_vl"), "tiny Qwen3-VL (smoke test)", "cpu"
    return qwen3_vl_8b_config(), "Qwen3-VL-8B-shaped", "cuda"


def build_gpu_model(config: Any, seed: int, device: str) -> tuple[Any, dict]:
    """A randomly initialised bf16 model of ``config`` on ``device`` (same weights for the same seed), with
    non-reentrant gradient checkpointing and the vision tower and projector frozen."""
    import transformers
    from transformers import AutoModelForImageTextToText

    from lightning_modules.model.backbone import resolve_attention

    attn = resolve_attention("auto")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            config, dtype=torch.bfloat16, attn_implementation=attn
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.model.visual.requires_grad_(False)
    model.train()
    total, n_flops = flops_params(model)
    info = {
        "attn": attn,
        "params": total,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "n_flops": n_flops,
        "build_s": time.perf_counter() - t0,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return model, info


class StepProfiler:
    """torch.profiler over one optimizer step (0-based ``step``; off when negative): top ops by self device
    time and by self CPU time, and the step's summed kernel time against its wall time."""

    def __init__(self, step: int, cuda: bool) -> None:
        self.step, self.cuda = step, cuda
        self.prof: Any = None
        self.started = 0.0
        self.report: dict[str, Any] | None = None

    def begin(self, index: int) -> None:
        if index != self.step:
            return
        from torch.profiler import ProfilerActivity, profile

        if self.cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=activities)
        self.prof.__enter__()
        self.started = time.perf_counter()

    def end(self, index: int) -> None:
        if index != self.step or self.prof is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.started
        self.prof.__exit__(None, None, None)
        events = self.prof.key_averages()

        def top(key: str, n: int) -> list[list]:
            rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
            return [
                [e.key[:70], e.count, e.self_device_time_total / 1e3, e.self_cpu_time_total / 1e3]
                for e in rows
            ]

        from torch.autograd import DeviceType

        # Operator rows (aten::mm, ...) carry the device time of the kernels they launched, and each kernel
        # also has a row of its own: count only the device-side rows, so each kernel is counted once.
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        self.report = {
            "step": self.step,
            "wall_ms": wall * 1e3,
            "kernel_ms": sum(e.self_device_time_total for e in kernels) / 1e3,
            "top_device": top("self_device_time_total", 15),
            "top_cpu": top("self_cpu_time_total", 10),
        }


def print_profile(side: str, report: dict[str, Any] | None) -> None:
    if not report:
        return
    print(
        f"  [{side}] profile of step {report['step']}: wall {report['wall_ms']:.0f} ms, GPU kernel time "
        f"{report['kernel_ms']:.0f} ms (device-side rows summed)"
    )
    for title, rows in (
        ("by self device time", report["top_device"]),
        ("by self CPU time", report["top_cpu"]),
    ):
        print(f"    {title}: {'op':<70} {'calls':>6} {'dev ms':>8} {'cpu ms':>8}")
        for name, count, dev, cpu in rows:
            print(f"      {name:<70} {count:>6} {dev:>8.1f} {cpu:>8.1f}")


def gpu_result(
    side: str,
    info: dict,
    ends: list[float],
    tokens: list[int],
    losses: list[float],
    warmup: int,
    cuda: bool,
    skip: int = -1,
) -> dict:
    """Throughput over the steps after ``warmup``, leaving out step ``skip`` (the profiled one) if any."""
    timed = [i for i in range(warmup, len(ends)) if i != skip]
    seconds = sum(ends[i] - ends[i - 1] for i in timed)
    return {
        **info,
        "side": side,
        "steps": len(ends),
        "timed_steps": len(timed),
        "tokens_per_s": sum(tokens[i] for i in timed) / seconds,
        "s_per_step": seconds / len(timed),
        "step_seconds": [b - a for a, b in zip(ends[:-1], ends[1:])],
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0,
    }


def train_config(
    config: Any,
    batches: list[dict[str, Any]],
    steps: int,
    warmup: int,
    seed: int,
    device: str,
    profile_step: int = -1,
    liger: bool = False,
) -> dict:
    """Fit `SFTModule` around a randomly initialised bf16 model of ``config`` on ``device`` (``cuda`` or ``cpu``)."""
    import functools

    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_modules.model.backbone import VisionLanguageBackbone
    from lightning_modules.sft import SFTModule

    cuda = device == "cuda"
    liger_calls = count_liger_calls()
    model, info = build_gpu_model(config, seed, device)
    loss_kwargs = backbone_loss_kwargs(liger)
    # for its processor-side settings; its tiny model is swapped out
    backbone = VisionLanguageBackbone("tiny", seed=seed, **loss_kwargs)
    backbone.model = model
    backbone.set_trainable(vision_tower=False, projector=False)

    profiler = StepProfiler(profile_step, cuda)

    class ProfileHook(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            profiler.begin(batch_idx)

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            profiler.end(batch_idx)

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
        callbacks=[clock, ProfileHook()],
    )
    loader = DataLoader(step_order(batches, steps), batch_size=1, shuffle=False, collate_fn=first)
    t0 = time.perf_counter()
    trainer.fit(SFTModule(backbone, optimizer=optimizer), loader)
    fit_s = time.perf_counter() - t0
    return {
        **gpu_result("ours", info, clock.ends, clock.tokens, clock.losses, warmup, cuda, profile_step),
        "fit_s": fit_s,
        "profile": profiler.report,
        "fused_loss": loss_kwargs.get("fused_loss", "torch (no fused_loss argument)"),
        "liger_calls": liger_calls(),
    }


def train_config_peer(
    config: Any,
    batches: list[dict[str, Any]],
    steps: int,
    warmup: int,
    seed: int,
    device: str,
    work: Path,
    profile_step: int = -1,
    liger: bool = False,
) -> dict:
    """``transformers.Trainer`` on the same model (same seed, frozen parts, checkpointing) and batches:
    the model's own forward with ``labels``, fused AdamW with bf16 states, lr 1e-5, wd 0, cosine."""
    from transformers import TrainerCallback, TrainingArguments

    cuda = device == "cuda"
    model, info = build_gpu_model(config, seed, device)
    order = [{k: b[k] for k in PEER_KEYS if b.get(k) is not None} for b in step_order(batches, steps)]

    profiler = StepProfiler(profile_step, cuda)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            profiler.begin(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            profiler.end(state.global_step - 1)

    LossTrainer = loss_recording_trainer()

    args = TrainingArguments(
        output_dir=str(work / "hf"),
        max_steps=steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        weight_decay=0.0,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.02 * steps),  # as WarmupSchedule("cosine", 0.02)
        train_sampling_strategy="sequential",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[],
        use_cpu=not cuda,
        use_liger_kernel=liger,
        bf16=False,  # the weights are bf16 already (as Lightning's bf16-true): no autocast on either side
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
    )
    clock = Clock()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = LossTrainer(
        model=model, args=args, train_dataset=listed(order), data_collator=first, callbacks=[clock]
    )
    t0 = time.perf_counter()
    trainer.train()
    fit_s = time.perf_counter() - t0
    tokens = [int(b["attention_mask"].sum()) for b in order]
    return {
        **gpu_result("peer", info, clock.ends, tokens, trainer.losses, warmup, cuda, profile_step),
        "fit_s": fit_s,
        "profile": profiler.report,
        "fused_loss": "liger (use_liger_kernel)" if liger else "transformers (full logits)",
    }


def run_gpu_side(args: argparse.Namespace) -> dict:
    batches = torch.load(args.data, weights_only=False)
    config, name, device = gpu_config(args)
    if args.side == "ours":
        result = train_config(
            config, batches, args.steps, args.warmup, args.seed, device, args.profile_step, args.liger
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = train_config_peer(
                config,
                batches,
                args.steps,
                args.warmup,
                args.seed,
                device,
                Path(tmp),
                args.profile_step,
                args.liger,
            )
    return {**result, "model": name}


# --------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side (warm-up included)")
    ap.add_argument("--batch-size", type=int, default=4, help="rows per batch")
    ap.add_argument("--batches", type=int, default=8, help="distinct pre-collated batches, cycled")
    ap.add_argument("--warmup", type=int, default=1, help="leading steps left out of the timing")
    ap.add_argument(
        "--repeats", type=int, default=1, help="fresh processes per side, order alternating; median reported"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--gpu-8b",
        action="store_true",
        help="8B-shaped Qwen3-VL on CUDA, ours vs transformers.Trainer: tokens/s, peak GPU memory, MFU",
    )
    ap.add_argument(
        "--batches-file",
        type=Path,
        default=None,
        help="pre-collated batches: loaded if the file exists, else collated and saved there",
    )
    ap.add_argument(
        "--profile-step",
        type=int,
        default=-1,
        help="--gpu-8b: profile this 0-based step on each side with torch.profiler, left out of the timing (-1: off)",
    )
    ap.add_argument(
        "--gpu-smoke", action="store_true", help=argparse.SUPPRESS
    )  # --gpu-8b's code path, tiny model, CPU
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak dense bf16 TFLOP/s for MFU (default: by GPU name)",
    )
    ap.add_argument(
        "--pack-tokens",
        type=int,
        default=None,
        help="collate each batch's conversations packed into rows of at most this many tokens (ours only)",
    )
    ap.add_argument(
        "--liger",
        action="store_true",
        help="Liger-Kernel's fused linear cross-entropy: ours via fused_loss='liger', the peer via use_liger_kernel",
    )
    ap.add_argument(
        "--sides",
        default="ours,peer",
        help="comma-separated sides to run, in this order (default: ours,peer)",
    )
    ap.add_argument(
        "--collate-only",
        action="store_true",
        help="collate the batches into --batches-file and stop (on a CPU box, for a GPU machine without av/decord)",
    )
    ap.add_argument(
        "--json-out", type=Path, default=None, help="write the settings, runs and medians here (JSON)"
    )
    ap.add_argument("--side", choices=("ours", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    args.sides = [s for s in args.sides.split(",") if s]
    if (
        not args.sides
        or any(s not in ("ours", "peer") for s in args.sides)
        or len(set(args.sides)) < len(args.sides)
    ):
        ap.error("--sides takes ours and/or peer, each once, e.g. ours,peer")
    if args.pack_tokens is not None and "peer" in args.sides and not args.collate_only:
        ap.error(
            "--pack-tokens: the peer (transformers Trainer) has no per-sample attention here; pass --sides ours"
        )
    if args.side:
        run_side(args)
        return
    if args.collate_only:
        if args.batches_file is None:
            ap.error("--collate-only needs --batches-file")
        with tempfile.TemporaryDirectory() as tmp:
            batches, what = load_or_build_batches(args, Path(tmp))
        print(f"data: {what} -> {args.batches_file} ({mib(args.batches_file.stat().st_size):.1f} MiB)")
        print(f"  {describe_batches(batches)}")
        return
    if args.gpu_8b:
        run_gpu_8b(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        batches, what = load_or_build_batches(args, Path(tmp))
        data = Path(tmp) / "batches.pt"
        torch.save(batches, data)
        print(f"data: {what}, collated once in {time.perf_counter() - t:.1f}s")
        print(f"  {describe_batches(batches)}")
        print(
            f"  {args.steps} steps per side ({args.warmup} warm-up), each side in a fresh process, torch threads: "
            f"{args.threads or torch.get_num_threads()}, cpus: {os.cpu_count()}"
        )
        runs: dict[str, list[dict]] = {side: [] for side in args.sides}
        for r in range(args.repeats):  # alternate the order, so drifting load on a shared box hits both alike
            for side in side_order(args, r):
                runs[side].append(spawn(side, data, args))

    write_json(args.json_out, args, what, runs)
    medians = [median_run(runs[side]) for side in args.sides]
    if args.repeats > 1:
        for side in args.sides:
            print(f"{side} tokens/s per run: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs[side]))
    print(
        f"\n{'side':<6} {'tokens/s':>9} {'s/step':>7} {'peak RSS':>10} {'RSS before fit':>15} {'fit growth':>11} {'loss step 1':>12}"
    )
    for r in medians:
        print(
            f"{r['side']:<6} {r['tokens_per_s']:>9.0f} {r['s_per_step']:>7.3f} {r['peak_rss_mib']:>7.0f}MiB "
            f"{r['rss_before_mib']:>12.0f}MiB {r['peak_rss_mib'] - r['rss_before_mib']:>8.0f}MiB {r['first_loss']:>12.5f}"
        )
    if args.liger and "ours" in runs and not median_run(runs["ours"]).get("liger_calls"):
        print(
            "NOTE: --liger, but ours never called Liger's kernel (backbone wiring missing, or no CUDA/liger-kernel)"
        )
    if len(medians) < 2:
        return
    ours, peer = (median_run(runs[side]) for side in ("ours", "peer"))
    ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
    growth = (ours["peak_rss_mib"] - ours["rss_before_mib"]) / max(
        peer["peak_rss_mib"] - peer["rss_before_mib"], 1e-9
    )
    print(
        f"\nours/peer: tokens/s {ratio:.2f}x (target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}); "
        f"peak RSS {ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f}x; growth during fit {growth:.2f}x"
    )
    print(f"first-step loss |ours - peer| = {abs(ours['first_loss'] - peer['first_loss']):.2e}")


if __name__ == "__main__":
    main()
