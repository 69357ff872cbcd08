"""The Quickstart demo: synthetic suite → records → media → one collated batch per task."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from datamodules.collate import Collator, build_example
from datamodules.media import stage_media
from datamodules.records import load_records
from datamodules.synthetic import generate_suite
from lightning_modules.processing import build_processor


def _row(task: str, batch: dict, tokenizer) -> str:
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


CONFIGS = Path(__file__).resolve().parent


def _overrides(out: Path, sft_manifest: Path, max_steps: int | None) -> Path:
    """A last ``--config`` that points the demo recipe's data, logs and checkpoints at ``out``."""
    import yaml

    logger = yaml.safe_load((CONFIGS / "shared" / "logger_demo.yaml").read_text())["trainer"]["logger"]
    for entry in logger:
        entry["init_args"]["save_dir"] = str(out)
    callbacks = yaml.safe_load((CONFIGS / "demo" / "sft.yaml").read_text())["trainer"]["callbacks"]
    for entry in callbacks:
        if entry["class_path"].endswith("ModelCheckpoint"):
            entry["init_args"]["dirpath"] = str(out / "checkpoints")
    trainer = {"default_root_dir": str(out), "logger": logger, "callbacks": callbacks}
    if max_steps is not None:
        trainer["max_steps"] = max_steps
    path = out / "demo_overrides.yaml"
    path.write_text(yaml.safe_dump({"trainer": trainer, "data": {"train_manifests": [str(sft_manifest)]}}))
    return path


def run_sft_demo(out: Path, sft_manifest: Path, max_steps: int | None = None) -> None:
    """The demo SFT stage: the recipe experiments/demo/sft.yaml through the LightningCLI."""
    from experiments.lightning_cli import run_lightning_cli

    configs = [CONFIGS / "shared" / "trainer_cpu.yaml", CONFIGS / "shared" / "logger_demo.yaml", CONFIGS / "demo" / "sft.yaml"]
    args = ["fit"]
    for c in [*configs, _overrides(out, sft_manifest, max_steps)]:
        args += ["--config", str(c)]
    print("\n== SFT demo: onethinker " + " ".join(args) + " ==")
    run_lightning_cli(args)


def run_demo(out: str | Path, per_task: int = 4, seed: int = 0, sft_steps: int | None = None) -> None:
    """Write the suite, collate one RL and one SFT batch per task, then run the demo SFT stage."""
    out = Path(out)
    paths = generate_suite(out / "synthetic", per_task=per_task, seed=seed)
    processor = build_processor("qwen3_vl")
    header = f"{'task':<34} {'rows':>4} {'tokens':>6} {'img tok':>7} {'vid tok':>7} {'pixel values':>14} {'grid (t,h,w)':>14} {'labelled':>8}"
    for mode in ("rl", "sft"):
        records = load_records(paths[mode], mode)
        by_task = defaultdict(list)
        for r in records:
            by_task[f"{r.problem_type}/{r.data_type}"].append(r)
        media = stage_media(mode)
        collate = Collator(processor, mode)
        print(f"\n== {mode.upper()} batches ({len(records)} records from {paths[mode]}) ==")
        print(header)
        for task, rows in by_task.items():
            batch = collate([build_example(r, mode, media) for r in rows])
            print(_row(task, batch, processor.tokenizer))
    first = load_records(paths["rl"], "rl")[0]
    print(f"\nExample prompt ({first.problem_type}/{first.data_type}, problem_id={first.problem_id}):")
    from datamodules.prompts import build_prompt

    print(build_prompt(first))
    print(f"answer: {first.answer}")
    run_sft_demo(out, paths["sft"], sft_steps)
