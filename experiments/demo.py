"""The Quickstart demo: the whole recipe on CPU with the tiny Qwen3-VL.

1. the synthetic suite, and one collated batch per task;
2. SFT (experiments/demo/sft.yaml), then export to a Hugging Face folder;
3. greedy reward evaluation before RL;
4. EMA-GRPO (experiments/demo/ema_grpo.yaml);
5. the same evaluation after RL, and a per-task table of the mean reward before and after.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from datamodules.collate import Collator, build_example
from datamodules.media import stage_media
from datamodules.prompts import build_prompt
from datamodules.records import load_records
from datamodules.synthetic import generate_suite
from experiments.compose import compose, logger_entries, redirect_checkpoints, short_class
from lightning_modules.model.processing import build_processor

CONFIGS = Path(__file__).resolve().parent
SHARED = [CONFIGS / "shared" / "trainer_cpu.yaml", CONFIGS / "shared" / "logger_demo.yaml"]


def _row(task: str, batch: dict, tokenizer: Any) -> str:
    ids = batch["input_ids"]
    image_id, video_id = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"])
    pixels = batch["pixel_values"] if batch["pixel_values"] is not None else batch["pixel_values_videos"]
    grid = batch["image_grid_thw"] if batch["image_grid_thw"] is not None else batch["video_grid_thw"]
    labels = batch.get("labels")
    trained = int((labels != -100).sum()) if labels is not None else 0
    return (
        f"{task:<34} {ids.shape[0]:>4} {ids.shape[1]:>6} {int((ids == image_id).sum()):>7} "
        f"{int((ids == video_id).sum()):>7} {str(tuple(pixels.shape)) if pixels is not None else '-':>14} "
        f"{str(grid[0].tolist()) if grid is not None else '-':>14} {trained:>8}"
    )


def show_batches(paths: dict[str, Path]) -> None:
    """One collated RL and SFT batch per task, through the offline Qwen3-VL processor."""
    processor = build_processor("qwen3_vl")
    header = f"{'task':<34} {'rows':>4} {'tokens':>6} {'img tok':>7} {'vid tok':>7} {'pixel values':>14} {'grid (t,h,w)':>14} {'labelled':>8}"
    for mode in ("rl", "sft"):
        records = load_records(paths[mode], mode)
        by_task = defaultdict(list)
        for r in records:
            by_task[f"{r.problem_type}/{r.data_type}"].append(r)
        collate = Collator(processor, mode)
        print(f"\n== {mode.upper()} batches ({len(records)} records from {paths[mode]}) ==")
        print(header)
        for task, rows in by_task.items():
            print(
                _row(
                    task,
                    collate([build_example(r, mode, stage_media(mode)) for r in rows]),
                    processor.tokenizer,
                )
            )
    first = load_records(paths["rl"], "rl")[0]
    print(f"\nExample prompt ({first.problem_type}/{first.data_type}, problem_id={first.problem_id}):")
    print(build_prompt(first))
    print(f"answer: {first.answer}")


def _overrides(out: Path, recipe: Path, name: str, data: dict[str, Any], trainer: dict[str, Any]) -> Path:
    """A last ``--config`` that points a demo recipe's data, logs and checkpoints at ``out``; the
    loggers and callbacks it edits are those the LightningCLI parser composes from the configs."""
    composed = compose([*SHARED, recipe])["trainer"]
    logger = logger_entries(composed)
    for entry in logger:
        entry["init_args"]["save_dir"] = str(out)
        if short_class(entry) == "WandbLogger":
            entry["init_args"].update(name=f"demo-{name}", tags=["demo", name, "tiny"])
        else:
            entry["init_args"]["name"] = f"csv-{name}"
    callbacks = composed.get("callbacks") or []
    callbacks = redirect_checkpoints(callbacks, out / f"{name}_checkpoints") or callbacks
    path = out / f"demo_{name}_overrides.yaml"
    config = {
        "trainer": {"default_root_dir": str(out), "logger": logger, "callbacks": callbacks, **trainer},
        "data": {**data, "synthetic_suite": None},  # the demo wrote its suite under out already
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(command: str, recipe: Path, override: Path, extra: list[str] = ()) -> Any:
    from experiments.lightning_cli import run_lightning_cli

    args = [command]
    for c in [*SHARED, recipe, override]:
        args += ["--config", str(c)]
    args += list(extra)
    print(f"\n== onethinker {' '.join(args)} ==", flush=True)
    return run_lightning_cli(args)


def run_sft_demo(out: Path, paths: dict[str, Path], max_steps: int | None = None) -> Path:
    """SFT on the suite, then export; returns the exported Hugging Face folder."""
    from experiments.export import export_checkpoint

    recipe = CONFIGS / "demo" / "sft.yaml"
    trainer = {"max_steps": max_steps} if max_steps is not None else {}
    _cli("fit", recipe, _overrides(out, recipe, "sft", {"train_manifests": [str(paths["sft"])]}, trainer))
    hf = export_checkpoint(out / "sft_checkpoints" / "last.ckpt", out / "sft_hf")
    print(f"[demo] exported the SFT model to {hf}")
    return hf


def evaluate_rewards(
    out: Path, paths: dict[str, Path], model: Path, name: str, ckpt: Path | None = None
) -> dict[str, float]:
    """Greedy rewards on the held-out evaluation manifest (``val/reward/...``)."""
    recipe = CONFIGS / "demo" / "ema_grpo.yaml"
    data = {"train_manifests": [str(paths["rl"])], "val_manifests": [str(paths["eval"])]}
    extra = [
        f"--model.init_args.backbone.init_args.model_name_or_path={model}",
        "--trainer.limit_val_batches=1.0",
    ]
    if ckpt is not None:
        extra.append(f"--ckpt_path={ckpt}")
    cli = _cli("validate", recipe, _overrides(out, recipe, name, data, {}), extra)
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}


def run_grpo_demo(out: Path, paths: dict[str, Path], model: Path, max_steps: int | None = None) -> Path:
    """EMA-GRPO from the exported SFT model; returns the last checkpoint."""
    recipe = CONFIGS / "demo" / "ema_grpo.yaml"
    data = {"train_manifests": [str(paths["rl"])], "val_manifests": [str(paths["eval"])]}
    trainer = {"max_steps": max_steps} if max_steps is not None else {}
    extra = [f"--model.init_args.backbone.init_args.model_name_or_path={model}"]
    _cli("fit", recipe, _overrides(out, recipe, "grpo", data, trainer), extra)
    return out / "grpo_checkpoints" / "last.ckpt"


def reward_table(before: dict[str, float], after: dict[str, float], field: str = "overall") -> str:
    """Markdown table per task key: mean ``field`` reward of sampled responses (what RL optimises) and
    of greedy responses, before and after RL."""
    nan = float("nan")
    sampled, greedy = f"val/sampled_reward/{field}", f"val/reward/{field}"
    keys = sorted(k[len(greedy) + 1 :] for k in before if k.startswith(greedy + "/"))
    lines = [
        "| task | sampled before | sampled after | change | greedy before | greedy after | change |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s_key, g_key in [(k, f"{sampled}/{k}", f"{greedy}/{k}") for k in keys] + [
        ("**all**", sampled, greedy)
    ]:
        sb, sa, gb, ga = (
            before.get(s_key, nan),
            after.get(s_key, nan),
            before.get(g_key, nan),
            after.get(g_key, nan),
        )
        lines.append(
            f"| {key} | {sb:.3f} | {sa:.3f} | {sa - sb:+.3f} | {gb:.3f} | {ga:.3f} | {ga - gb:+.3f} |"
        )
    return "\n".join(lines)


class StageTimer:
    """Wall time of each named stage: ``with timer("SFT"): ...``, then ``timer.report()``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - start
            print(f"[demo] {name}: {self.seconds[name]:.0f} s", flush=True)

    def report(self) -> str:
        rows = [*self.seconds.items(), ("total", sum(self.seconds.values()))]
        return "\n".join(
            f"{name:<40} {seconds // 60:>3.0f} min {seconds % 60:>4.1f} s" for name, seconds in rows
        )


def run_demo(
    out: str = "outputs/demo",
    per_task: int = 4,
    seed: int = 0,
    sft_steps: int | None = None,
    grpo_steps: int | None = None,
    sft_threads: int = 2,
    rl_threads: int = 1,
    sft_only: bool = False,
) -> dict[str, dict[str, float]]:
    """The Quickstart demo on the synthetic suite: SFT, export, EMA-GRPO, rewards before and after.

    Prints and returns the rewards before and after RL (``{}`` with ``sft_only``).

    Args:
        out: output folder (suite, checkpoints, logs, exported models).
        per_task: synthetic samples per (problem_type, data_type).
        seed: the suite's seed.
        sft_steps: override the demo SFT run's ``max_steps``.
        grpo_steps: override the demo EMA-GRPO run's ``max_steps`` (updates, 4 per RL step).
        sft_threads: torch intra-op threads in SFT (the fastest on a 2-core machine: benchmarks/README.md).
        rl_threads: torch threads in the generation-bound stages (evaluation, EMA-GRPO).
        sft_only: stop after SFT and export (the start of ``ablate`` on the demo).
    """
    import torch

    out = Path(out)
    stages = StageTimer()
    with stages("synthetic suite"):
        paths = generate_suite(out / "synthetic", per_task=per_task, seed=seed)
        show_batches(paths)
    torch.set_num_threads(sft_threads)
    with stages(f"SFT + export ({sft_threads} threads)"):
        model = run_sft_demo(out, paths, sft_steps)
    if sft_only:
        print(f"\n== Wall time per stage ==\n{stages.report()}")
        return {}
    torch.set_num_threads(rl_threads)
    with stages(f"evaluation before RL ({rl_threads} threads)"):
        before = evaluate_rewards(out, paths, model, "eval_before")
    with stages(f"EMA-GRPO ({rl_threads} threads)"):
        last = run_grpo_demo(out, paths, model, grpo_steps)
    with stages(f"evaluation after RL ({rl_threads} threads)"):
        after = evaluate_rewards(out, paths, model, "eval_after", ckpt=last)
    table = reward_table(before, after)
    (out / "rewards_before_after.md").write_text(table + "\n")
    print("\n== Mean reward on the held-out synthetic evaluation set, before and after EMA-GRPO ==")
    print(table)
    print(f"\n== Wall time per stage ==\n{stages.report()}")
    print(f"\n[demo] logs, checkpoints and this table are under {out}")
    return {"before": before, "after": after}
