"""GPU check of `VLLMColocateEngine` on a random Qwen3-VL-2B-shaped model (no hub needed).

1. vLLM's prompt token ids equal ours, for image, video and text prompts (Qwen3-VL timestamps included);
2. every weight of vLLM's model is loaded from the policy;
3. the log-prob gap between vLLM's sampled tokens and the trainer's recompute (mean, max).

Prints one ``GPU_CHECK_RESULT {...}`` line. Needs CUDA and vLLM (``bash scripts/setup.sh --gpu``);
elsewhere it says so and exits 0. Run by ``benchmarks/gpu_check_vllm.sh``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_grpo_step import build_backbone  # noqa: E402


def media_prompts(backbone: Any, suite: Path, per_kind: int) -> dict[str, Any]:
    """Left-padded RL prompts from the synthetic suite: images, videos and text only."""
    from datamodules.collate import Collator, build_example
    from datamodules.media import PixelBudget, stage_media
    from datamodules.records import load_records

    records = load_records(suite / "rl.json", "rl")
    picked = [
        r for kind in ("image", "video") for r in [x for x in records if x.data_type == kind][:per_kind]
    ]
    picked += [dataclasses.replace(picked[0], media=())]
    media = dataclasses.replace(
        stage_media("rl", backbone.family), image=PixelBudget(64 * 32 * 32, 256 * 32 * 32), max_frames=8
    )
    examples = [build_example(r, "rl", media) for r in picked]
    examples[-1].messages[0]["content"] = [
        p for p in examples[-1].messages[0]["content"] if p["type"] == "text"
    ]
    batch = Collator(backbone.processor, "rl")(examples)
    return {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def vllm_model(llm: Any) -> Any:
    worker = llm.llm_engine.model_executor.driver_worker
    return getattr(worker, "worker", worker).model_runner.model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=4, help="image and video prompts each")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check_vllm: CUDA is not available here; nothing checked.")
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("gpu_check_vllm: vLLM is not installed (bash scripts/setup.sh --gpu); nothing checked.")
        return
    from datamodules.synthetic import generate_suite
    from lightning_modules.rl.rollout_requests import build_requests
    from lightning_modules.rl.vllm_engine import VLLMColocateEngine

    args.model, args.device = "2b", "cuda"
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        suite = generate_suite(Path(tmp) / "suite", 1, args.seed)["rl"].parent
        backbone = build_backbone(args)
        prompts = media_prompts(backbone, suite, args.per_kind)
        engine = VLLMColocateEngine(
            max_new_tokens=args.max_new_tokens, gpu_memory_utilization=0.5, enforce_eager=True
        )
        engine.setup(backbone, rank=0, world_size=1)
        engine.sync_weights(backbone, version=0)
        every = {name for name, _ in vllm_model(engine.llm).named_parameters()}
        loaded = engine.loaded_names or set()
        result["weights"] = {
            "vllm_parameters": len(every),
            "loaded": len(loaded & every),
            "missing": sorted(every - loaded)[:10],
        }

        # 1. prompt ids: vLLM's expansion of our requests against the collated rows
        from vllm import SamplingParams

        requests = build_requests(prompts, backbone.tokenizer, timestamped_video=True)
        engine.wake()
        outputs = engine.llm.generate(
            [r.as_vllm() for r in requests], SamplingParams(max_tokens=1), use_tqdm=False
        )
        engine.sleep()
        same = []
        for row, out in enumerate(outputs):
            ours = prompts["input_ids"][row][prompts["attention_mask"][row].bool()].tolist()
            same.append(list(out.prompt_token_ids) == ours)
        kinds = [m["data_type"] if m["media"] else "text" for m in prompts["meta"]]
        result["prompt_ids_equal"] = dict(zip([f"{i}:{k}" for i, k in enumerate(kinds)], same))

        # 3. the trainer/engine log-prob gap on sampled rollouts
        engine.sync_weights(backbone, version=0)
        rollouts = engine(backbone, prompts, 4, seed=1)
        with torch.no_grad():
            trainer_lp = backbone.token_logprobs(rollouts.batch, rollouts.response_mask.bool())
        from lightning_modules.rl.losses import logprob_gap

        total, worst, tokens = logprob_gap(trainer_lp, rollouts.sampling_logprobs, rollouts.response_mask)
        result["logprob_gap"] = {"mean": total / max(tokens, 1), "max": worst, "tokens": tokens}
        engine.teardown()
    ok = not result["weights"]["missing"] and all(same)
    print("GPU_CHECK_RESULT " + json.dumps({"ok": ok, **result}))


if __name__ == "__main__":
    main()
