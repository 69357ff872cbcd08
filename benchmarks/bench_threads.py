"""Torch intra-op threads on a small CPU: the demo's SFT step and its generation, per thread count.

The demo's tiny Qwen3-VL (synthetic vocabulary, 128 hidden, 4 layers, frozen vision tower) on the
demo's batches: ``--sft-batches`` SFT steps (forward, backward, AdamW) over collated batches of 4
records, then greedy and sampled generation as the demo's evaluation runs it (16 prompts; 1 greedy and
4 sampled answers each, ``--max-new-tokens``). The model is random, so answers rarely stop early and
each thread count decodes the same tokens. Every thread count runs the same work in one process, after
one warm-up step; the ratio is against the first thread count.

    python benchmarks/bench_threads.py                     # threads 1,2
    python benchmarks/bench_threads.py --threads 1,2 --sft-batches 16 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def batches(suite: Path, mode: str, size: int, count: int, processor) -> list[dict]:
    from datamodules.datamodule import OneThinkerDataModule

    manifests = {"train_manifests": [str(suite / f"{mode}.json")]}
    dm = OneThinkerDataModule(
        mode=mode, batch_size=size, num_workers=0, seed=0, family="qwen3_vl", **manifests
    )
    dm.connect(processor)
    dm.setup("fit")
    out = []
    for batch in dm.train_dataloader():
        out.append(batch)
        if len(out) == count:
            break
    return out


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument(
        "--sft-batches", type=int, default=16, help="SFT steps timed (one epoch of the demo suite)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2, help="each measurement's best of this many")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    from datamodules.synthetic import generate_suite
    from lightning_modules.model.backbone import VisionLanguageBackbone
    from lightning_modules.sft import SFTModule

    backbone = VisionLanguageBackbone(
        "tiny",
        tiny_vocab="synthetic",
        tiny_hidden=128,
        tiny_layers=4,
        freeze_vision_tower=True,
        freeze_projector=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite"
        generate_suite(suite, per_task=4, seed=0)
        sft = batches(suite, "sft", 4, args.sft_batches + 1, backbone.processor)
        prompts = batches(suite, "rl", 16, 1, backbone.processor)[0]
    module = SFTModule(backbone)
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)

    def sft_step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        module.loss(batch)[0].backward()
        optimizer.step()

    def sft_epoch() -> None:
        for batch in sft[1:]:
            sft_step(batch)

    def generation() -> None:
        backbone.generate(prompts, 1, max_new_tokens=args.max_new_tokens, do_sample=False)
        backbone.generate(prompts, 4, max_new_tokens=args.max_new_tokens)

    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        sft_step(sft[0])  # warm-up
        rows.append(
            (
                threads,
                min(timed(sft_epoch) for _ in range(args.repeats)),
                min(timed(generation) for _ in range(args.repeats)),
            )
        )
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"kernels {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    print(
        f"| threads | SFT s ({args.sft_batches} steps) | vs first | generation s (16 x (1 + 4) x {args.max_new_tokens}) | vs first |"
    )
    print("|---:|---:|---:|---:|---:|")
    base_sft, base_gen = rows[0][1], rows[0][2]
    for threads, sft_s, gen_s in rows:
        print(
            f"| {threads} | {sft_s:.1f} | {base_sft / sft_s:.2f}x | {gen_s:.1f} | {base_gen / gen_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
