"""Rollout throughput: generated tokens/s of each rollout engine on the same prompts.

Engines: ``hf`` (`HFGenerateEngine`, dynamic KV cache), ``hf-static`` (the same with
``cache_implementation="static"``) and ``vllm`` (`VLLMColocateEngine`; CUDA and vLLM only). Prompts are the
synthetic suite's RL rows as text (bench_grpo_step's), ``P`` prompts × ``G`` samples × at most
``L`` new tokens; every engine gets a warm-up call, then ``--repeats`` timed calls. The policy is
the tiny preset (CPU) or a random Qwen3-VL-2B-shaped model in bf16 (``--model 2b``).

    python benchmarks/bench_rollout.py                                  # CPU: hf vs hf-static, tiny
    python benchmarks/bench_rollout.py --device cuda --model 2b \\
        --prompts 64 --group 1 --max-new-tokens 512 --engines hf,hf-static,vllm
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_grpo_step import build_backbone, build_engine, chat, load_prompts  # noqa: E402

RESULT_PREFIX = "BENCH_ROLLOUT_RESULT "


def prompt_batch(backbone: Any, args: argparse.Namespace, suite: Path) -> dict[str, Any]:
    from datamodules.collate import Collator, Example

    records = load_prompts(suite, args.prompts)
    batch = Collator(backbone.processor, "rl")([Example(r, chat(r)) for r in records])
    return {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def measure(name: str, backbone: Any, prompts: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    engine = build_engine(name, args.max_new_tokens, args.gpu_memory_utilization)
    engine.setup(backbone, rank=0, world_size=1)
    engine.sync_weights(backbone, version=0)
    engine(backbone, prompts, args.group, seed=0)  # warm-up (compilation, cache allocation)
    seconds, tokens = [], []
    for i in range(args.repeats):
        if args.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        rollouts = engine(backbone, prompts, args.group, seed=1 + i)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        tokens.append(rollouts.generated_tokens)
    engine.teardown()
    return {
        "engine": name,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_sec": sum(tokens) / sum(seconds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="prompts per call (P)")
    ap.add_argument("--group", type=int, default=4, help="samples per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="response cap (L)")
    ap.add_argument("--engines", default="hf,hf-static")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", choices=("tiny", "2b"), default="tiny")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: skipped, CUDA is not available on this machine (nothing measured).")
        return
    torch.set_num_threads(args.threads)
    from datamodules.synthetic import generate_suite

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite"
        generate_suite(suite, 1, args.seed)
        backbone = build_backbone(args)
        prompts = prompt_batch(backbone, args, suite)
        results = [measure(name, backbone, prompts, args) for name in args.engines.split(",")]
    base = results[0]["tokens_per_sec"]
    for r in results:
        print(
            f"{r['engine']:>10}: {r['tokens_per_sec']:9.1f} tokens/s  ({r['tokens_per_sec'] / base:.2f}x {results[0]['engine']})"
        )
    print(RESULT_PREFIX + json.dumps({"args": vars(args), "results": results}))


if __name__ == "__main__":
    main()
