"""GRPO step benchmark: s/step, generated tokens/s and peak RSS of `GRPOModule` against TRL's `GRPOTrainer`.

One RL step = rollout (sampling ``G`` responses of at most ``L`` new tokens for each of ``P`` prompts),
reward (``rewards.score``, overall, on every response) and the update (old log-probs, then
``updates`` optimizer steps over the step's rollouts). Both sides train the same tiny Qwen3-VL
(`VisionLanguageBackbone("tiny")`, same seed, vision tower and projector frozen) on the same prompts
in the same order, on CPU:

- ours: a Lightning ``Trainer`` fitting `GRPOModule` (``HFGenerateEngine``, ``advantage="grpo"``,
  online filter off, token-mean loss, clip 0.2 / 0.3, no dual clip, no KL);
- peer: ``trl.GRPOTrainer`` (``loss_type="dapo"`` = token-mean over the accumulated batch,
  ``scale_rewards="group"``, epsilon 0.2 / 0.3, ``beta=0``), with
  ``steps_per_generation * num_iterations / gradient_accumulation_steps == updates``.

Both use AdamW (lr 1e-6, no weight decay, constant), gradient-norm clip 1.0, temperature 1,
top-p 1, no top-k. Prompts are the synthetic suite's RL rows as text only (the media placeholder
dropped, no pixels), built with `datamodules.prompts.build_prompt`, so both sides tokenise the same
chat. Each side runs in a fresh subprocess (this script with ``--side``), so peak RSS is its own.
Timing runs from the end of the warm-up step(s) to the end of the last step.

``--device cuda --model 2b`` runs both sides on a GPU on a randomly initialised Qwen3-VL-2B-shaped model
in bf16 (ours under Lightning's ``bf16-true``, as the former ``trainer_gpu.yaml``; TRL with ``bf16=False`` on the
same bf16 weights, so neither autocasts), and reports peak GPU memory as well.

    python benchmarks/bench_grpo_step.py                      # P=4, G=4, L=16, 2 updates, 1 + 2 steps
    python benchmarks/bench_grpo_step.py --prompts 8 --group 8 --max-new-tokens 128 --updates 4
    python benchmarks/bench_grpo_step.py --device cuda --model 2b --prompts 8 --group 8 --max-new-tokens 128 --micro-batch 8
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

RESULT_PREFIX = "BENCH_GRPO_RESULT "
LR = 1e-6


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --------------------------------------------------------------------------- prompts


def load_prompts(suite: Path, n: int) -> list[Any]:
    """The first ``n`` RL records of the suite (cycled if there are fewer)."""
    from datamodules.records import load_records

    records = load_records(suite / "rl.json", "rl")
    return [records[i % len(records)] for i in range(n)]


def prompt_text(record: Any) -> str:
    """The released user turn with the media placeholder dropped (text-only prompt)."""
    from datamodules.prompts import build_prompt

    return build_prompt(record).replace("<image>", "").replace("<video>", "")


def chat(record: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": prompt_text(record)}]}]


def score_overall(response: str, answer: str, problem_type: str, data_type: str, problem_id: Any) -> float:
    import rewards

    return rewards.score(response, answer, problem_type, data_type, problem_id=problem_id).overall


# --------------------------------------------------------------------------- model


def qwen3_vl_2b_config() -> Any:
    """Qwen3-VL-2B's shapes on `transformers.Qwen3VLConfig` (random weights, no download)."""
    from transformers import Qwen3VLConfig

    text = {
        "vocab_size": 151_936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262_144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 2048,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    }
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)


def build_backbone(args: argparse.Namespace) -> Any:
    """The policy of both sides: the tiny preset, or (``--model 2b``) a randomly initialised bf16
    Qwen3-VL-2B-shaped model on ``--device`` in the tiny backbone's place; vision tower and projector frozen."""
    from lightning_modules.model.backbone import VisionLanguageBackbone, resolve_attention

    backbone = VisionLanguageBackbone("tiny", seed=args.seed)
    if args.model == "tiny":
        return backbone
    from transformers import AutoModelForImageTextToText

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.device == "cuda":
            torch.cuda.manual_seed(args.seed)
        with torch.device(args.device):
            model = AutoModelForImageTextToText.from_config(
                qwen3_vl_2b_config(), dtype=torch.bfloat16, attn_implementation=resolve_attention("auto")
            )
    model.train()
    backbone.model = model
    backbone.set_trainable(vision_tower=False, projector=False)
    return backbone


def model_settings(args: argparse.Namespace, backbone: Any) -> dict:
    model = backbone.hf_model
    return {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "model": args.model,
        "dtype": str(next(model.parameters()).dtype),
        "attn": model.config._attn_implementation,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }


def build_engine(name: str, max_new_tokens: int, gpu_memory_utilization: float = 0.5) -> Any:
    """A rollout engine by name: ``hf`` (dynamic KV cache), ``hf-static`` or ``vllm`` (temperature 1, top-p 1)."""
    from lightning_modules.rl.rollout import HFGenerateEngine

    if name == "hf":
        return HFGenerateEngine(max_new_tokens=max_new_tokens)
    if name == "hf-static":
        return HFGenerateEngine(max_new_tokens=max_new_tokens, cache_implementation="static")
    if name == "vllm":
        from lightning_modules.rl.vllm_engine import VLLMColocateEngine

        return VLLMColocateEngine(
            max_new_tokens=max_new_tokens, gpu_memory_utilization=gpu_memory_utilization
        )
    raise SystemExit(f"unknown engine {name!r}")


def sync(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()


class PhaseTimer:
    """Wall seconds (device synchronised) and RSS after each call of wrapped functions, per phase."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seconds: dict[str, list[float]] = {}
        self.rss_after: dict[str, float] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            sync(self.args)
            t = time.perf_counter()
            out = fn(*a, **k)
            sync(self.args)
            self.seconds.setdefault(name, []).append(time.perf_counter() - t)
            self.rss_after[name] = max(self.rss_after.get(name, 0.0), rss_mib())
            return out

        return timed

    def per_step(self, steps: int) -> dict[str, list[float]]:
        """Each phase's seconds summed per RL step (calls split evenly over the steps)."""
        out = {}
        for name, values in self.seconds.items():
            k = max(1, len(values) // steps)
            out[name] = [sum(values[i : i + k]) for i in range(0, len(values), k)]
        return out


class Forward:
    """A callable wrapper that keeps the wrapped object's attributes (e.g. ``max_new_tokens``)."""

    def __init__(self, target: Any, call: Any) -> None:
        self._target, self._call = target, call

    def __call__(self, *a: Any, **k: Any) -> Any:
        return self._call(*a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


# --------------------------------------------------------------------------- sides (each in its own process)


def summarise(
    side: str, ends: list[float], tokens: list[int], warmup: int, rss_before: float, settings: dict
) -> dict:
    seconds = ends[-1] - ends[warmup - 1]
    counted = sum(tokens[warmup:])
    timed = len(ends) - warmup
    return {
        "side": side,
        "steps": len(ends),
        "timed_steps": timed,
        "seconds": seconds,
        "s_per_step": seconds / timed,
        "step_seconds": [b - a for a, b in zip(ends[warmup - 1 : -1], ends[warmup:])],
        "generated_tokens": counted,
        "generated_tokens_per_step": tokens,
        "tokens_per_s": counted / seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_initialized() else 0.0,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_initialized() else 0.0,
        "threads": torch.get_num_threads(),
        "settings": settings,
    }


def run_ours(args: argparse.Namespace) -> dict:
    import lightning as L

    from datamodules.collate import Collator, Example
    from lightning_modules.grpo import GRPOModule

    P, G, steps = args.prompts, args.group, args.steps
    records = load_prompts(args.suite, P * steps)
    backbone = build_backbone(args)
    bf16 = next(backbone.hf_model.parameters()).dtype == torch.bfloat16
    collate = Collator(backbone.processor, "rl")
    batches = [collate([Example(r, chat(r)) for r in records[i : i + P]]) for i in range(0, P * steps, P)]
    if P % args.updates:
        raise SystemExit(f"--prompts ({P}) must be a multiple of --updates ({args.updates})")
    settings = {
        "rollouts_per_prompt": G,
        "prompts_per_step": P,
        "prompts_per_update": P // args.updates,
        "micro_batch_size": args.micro_batch,
        "ppo_epochs": 1,
        "max_new_tokens": args.max_new_tokens,
        "advantage": "grpo",
        "filter_groups": False,
        "loss_aggregation": "token-mean",
        "clip": [0.2, 0.3],
        "dual_clip": None,
        "kl_coef": 0.0,
        "optimizer": f"AdamW lr {LR} wd 0",
        "grad_clip": 1.0,
        "prompt_tokens_per_step": [int(b["attention_mask"].sum()) for b in batches],
        "precision": "bf16-true" if bf16 else "32-true",
        **model_settings(args, backbone),
    }
    module = GRPOModule(
        backbone,
        rollout=build_engine(args.engine, args.max_new_tokens),
        rollouts_per_prompt=G,
        advantage="grpo",
        filter_groups=False,
        prompts_per_update=P // args.updates,
        ppo_epochs=1,
        micro_batch_size=args.micro_batch,
        dual_clip=None,
        optimizer=lambda params: torch.optim.AdamW(params, lr=LR, weight_decay=0.0),
        seed=args.seed,
    )

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.tokens: list[int] = []
            self.rss: list[float] = []

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.rss.append(rss_mib())

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            sync(args)
            self.ends.append(time.perf_counter())
            self.tokens.append(sum(p.rollouts.generated_tokens for p in pl_module.last_rollouts["parts"]))
            self.rss.append(rss_mib())

    phases = PhaseTimer(args)
    engine = module.rollout
    module.rollout = Forward(engine, phases.wrap("generate", engine))
    module._score = phases.wrap("reward", module._score)
    clock = Clock()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision="bf16-true" if bf16 else "32-true",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    rss_before = rss_mib()
    trainer.fit(module, loader)
    settings["optimizer_steps"] = trainer.global_step
    settings["phase_seconds_per_step"] = phases.per_step(steps)
    settings["phase_peak_rss_mib"] = phases.rss_after
    settings["rss_at_train_start_then_after_each_step_mib"] = clock.rss
    return summarise("ours", clock.ends, clock.tokens, args.warmup, rss_before, settings)


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    P, G, steps = args.prompts, args.group, args.steps
    records = load_prompts(args.suite, P * steps)
    backbone = build_backbone(args)
    dataset = Dataset.from_list(
        [
            {
                "prompt": chat(r),
                "answer": r.target,
                "problem_type": r.problem_type,
                "data_type": r.data_type,
                "problem_id": str(r.problem_id),
            }
            for r in records
        ]
    )
    tokens: list[int] = []

    def overall(
        completions: list,
        answer: list,
        problem_type: list,
        data_type: list,
        problem_id: list,
        completion_ids: list,
        **_: Any,
    ) -> list[float]:
        tokens.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score_overall(*row) for row in zip(texts, answer, problem_type, data_type, problem_id)]

    # rollout rows per micro-batch = per_device_train_batch_size; rows per generation = P * G;
    # optimizer updates per generation = steps_per_generation * num_iterations / gradient_accumulation_steps
    rows = P * G
    micro = args.micro_batch
    accumulation = rows // (args.updates * micro)
    if accumulation * args.updates * micro != rows:
        raise SystemExit("P * G must be a multiple of updates * micro-batch")
    config = GRPOConfig(
        output_dir=str(work / "trl"),
        use_cpu=args.device == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        seed=args.seed,
        data_seed=args.seed,
        learning_rate=LR,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        max_grad_norm=1.0,
        num_generations=G,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=rows // micro,
        num_iterations=1,
        max_steps=steps * args.updates,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.3,
        loss_type="dapo",
        scale_rewards="group",
        shuffle_dataset=False,
        log_completions=False,
        dataloader_num_workers=0,
        bf16=False,  # no autocast: the weights are fp32 (tiny) or bf16 (2b) already
        gradient_checkpointing=False,  # TRL's default is on; ours does not checkpoint the backbone
    )
    settings = {
        "trl": trl.__version__,
        "num_generations": G,
        "prompts_per_step": P,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "steps_per_generation": config.steps_per_generation,
        "generation_batch_size": config.generation_batch_size,
        "num_iterations": 1,
        "updates_per_generation": config.steps_per_generation // accumulation,
        "max_completion_length": args.max_new_tokens,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "epsilon": [0.2, 0.3],
        "beta": 0.0,
        "optimizer": f"adamw_torch lr {LR} wd 0",
        "max_grad_norm": 1.0,
        "gradient_checkpointing": False,
        **model_settings(args, backbone),
    }

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, a: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % args.updates == 0:  # the last update of an RL step
                sync(args)
                self.ends.append(time.perf_counter())

    clock = Clock()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = GRPOTrainer(
        model=backbone.hf_model,
        reward_funcs=overall,
        args=config,
        train_dataset=dataset,
        processing_class=backbone.processor,
        callbacks=[clock],
    )
    phases = PhaseTimer(args)
    for name, attr in (("generate", "_generate_single_turn"), ("reward", "_calculate_rewards")):
        if hasattr(trainer, attr):
            setattr(trainer, attr, phases.wrap(name, getattr(trainer, attr)))
    rss_before = rss_mib()
    trainer.train()
    settings["phase_seconds_per_step"] = phases.per_step(steps)
    settings["phase_peak_rss_mib"] = phases.rss_after
    settings["optimizer_steps"] = trainer.state.global_step
    return summarise("trl", clock.ends, tokens, args.warmup, rss_before, settings)


# --------------------------------------------------------------------------- driver


def spawn(side: str, args: argparse.Namespace, suite: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--suite", str(suite)]
    for flag in (
        "prompts",
        "group",
        "max_new_tokens",
        "updates",
        "micro_batch",
        "steps",
        "warmup",
        "seed",
        "threads",
        "device",
        "model",
        "engine",
    ):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["process_seconds"] = time.perf_counter() - started
            return result
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
    raise SystemExit(f"side {side!r} failed (exit {proc.returncode})")


def run_side(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_ours(args) if args.side == "ours" else run_trl(args, Path(tmp))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4, help="prompts per RL step (P)")
    ap.add_argument("--group", type=int, default=4, help="responses per prompt (G)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="response cap (L)")
    ap.add_argument("--updates", type=int, default=2, help="optimizer updates per RL step")
    ap.add_argument("--micro-batch", type=int, default=4, help="rollout rows per forward/backward")
    ap.add_argument("--steps", type=int, default=3, help="RL steps per side, warm-up included")
    ap.add_argument("--warmup", type=int, default=1, help="RL steps left out of the timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per side, alternating order")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--model",
        choices=("tiny", "2b"),
        default="tiny",
        help="tiny preset (fp32) or a random Qwen3-VL-2B-shaped model (bf16)",
    )
    ap.add_argument(
        "--suite-dir",
        type=Path,
        default=None,
        help="an existing synthetic suite (generated with the same seed) instead of generating one",
    )
    ap.add_argument("--engine", choices=("hf", "hf-static", "vllm"), default="hf", help="our rollout engine")
    ap.add_argument("--no-peer", action="store_true", help="run our side only (no TRL)")
    ap.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--suite", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: skipped, CUDA is not available on this machine (nothing measured).")
        return
    if args.side:
        run_side(args)
        return

    from datamodules.synthetic import SYNTHETIC_TASKS

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite"
        if args.suite_dir is not None:
            suite = args.suite_dir
        else:
            from datamodules.synthetic import generate_suite

            generate_suite(
                suite, max(1, math.ceil(args.prompts * args.steps / len(SYNTHETIC_TASKS))), args.seed
            )
        results: dict[str, list[dict]] = {"ours": [], "trl": []}
        for i in range(args.repeats):
            sides = ("ours",) if args.no_peer else ("ours", "trl") if i % 2 == 0 else ("trl", "ours")
            for side in sides:
                r = spawn(side, args, suite)
                results[side].append(r)
                print(
                    f"[{side}] {r['s_per_step']:.2f} s/step ({', '.join(f'{s:.2f}' for s in r['step_seconds'])}), "
                    f"{r['tokens_per_s']:.1f} generated tokens/s, tokens/step {r['generated_tokens_per_step']}, "
                    f"peak RSS {r['peak_rss_mib']:.0f} MiB (before fit {r['rss_before_mib']:.0f}), "
                    f"peak GPU {r['peak_gpu_gib']:.1f} GiB allocated ({r['peak_reserved_gib']:.1f} reserved), "
                    f"process {r['process_seconds']:.0f} s",
                    flush=True,
                )
                ph = r["settings"].get("phase_seconds_per_step", {})
                print(
                    "    phases per step (s): "
                    + "; ".join(f"{k} " + ", ".join(f"{v:.2f}" for v in vs) for k, vs in ph.items())
                    + f"; peak RSS after phase (MiB): {r['settings'].get('phase_peak_rss_mib')}",
                    flush=True,
                )
    ran = [side for side in ("ours", "trl") if results[side]]
    for side in ran:
        print(f"{side} settings: {json.dumps(results[side][0]['settings'])}")

    def median(side: str, key: str) -> float:
        values = sorted(r[key] for r in results[side])
        return values[len(values) // 2]

    print(
        f"\nP={args.prompts} prompts x G={args.group}, L={args.max_new_tokens}, {args.updates} updates/step, "
        f"micro-batch {args.micro_batch}, {args.steps - args.warmup} timed steps after {args.warmup} warm-up, "
        f"threads {results['ours'][0]['threads']}, median of {args.repeats}"
    )
    print(f"device {args.device}, model {args.model}, our engine {args.engine}")
    print("| side | s/step | generated tokens/s | peak RSS (MiB) | peak GPU allocated (GiB) |")
    print("|---|---:|---:|---:|---:|")
    for side in ran:
        print(
            f"| {side} | {median(side, 's_per_step'):.2f} | {median(side, 'tokens_per_s'):.1f} | "
            f"{median(side, 'peak_rss_mib'):.0f} | {median(side, 'peak_gpu_gib'):.1f} |"
        )
    if args.no_peer:
        return
    speed = median("trl", "s_per_step") / median("ours", "s_per_step")
    memory = median("ours", "peak_rss_mib") / median("trl", "peak_rss_mib")
    print(
        f"ours / TRL: {speed:.2f}x faster per step (target > 1: {'met' if speed > 1 else 'NOT met'}); "
        f"peak RSS {memory:.2f}x"
    )


if __name__ == "__main__":
    main()
