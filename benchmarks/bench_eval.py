"""Evaluation throughput: samples/s of `EvaluationModule` (``onethinker test``) on the synthetic suite.

The tiny demo Qwen3-VL (randomly initialised: it never stops early, so every answer costs the full
``--max-new-tokens``) decodes greedily every record of the synthetic evaluation manifest (all 16 task
keys), segmentation answers go through a tiny random SAM2, and the reports are written. Each batch size
runs in a fresh output folder, so nothing is resumed. Batch size 1 is the sample-at-a-time loop a plain
generate script runs; the ratio against it is what batching (left padding) buys.

    python benchmarks/bench_eval.py                       # per-task 4 (64 records), batch sizes 1 and 16
    python benchmarks/bench_eval.py --per-task 8 --batch-sizes 1,8,32 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def run(suite: Path, out: Path, batch_size: int, max_new_tokens: int, workers: int) -> dict:
    import lightning as L

    from datamodules.datamodule import OneThinkerDataModule
    from lightning_modules.eval.sam2_masks import Sam2MaskPredictor
    from lightning_modules.evaluation import EvaluationModule
    from lightning_modules.model.backbone import VisionLanguageBackbone

    backbone = VisionLanguageBackbone("tiny", tiny_vocab="synthetic", tiny_hidden=128, tiny_layers=4)
    dm = OneThinkerDataModule(
        mode="eval",
        test_manifests=[str(suite / "eval.json")],
        eval_batch_size=batch_size,
        num_workers=workers,
    )
    dm.connect(backbone.processor)
    module = EvaluationModule(
        backbone,
        output_dir=str(out),
        max_new_tokens=max_new_tokens,
        mask_predictor=Sam2MaskPredictor("tiny", "cpu"),
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    started = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    samples = metrics["benchmarks"]["eval"]["samples"]
    return {"batch_size": batch_size, "samples": samples, "wall_s": wall, "samples_per_s": samples / wall,
            "step_samples_per_s": metrics["run"]["samples_per_second"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-task", type=int, default=4)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 was fastest on a 2-core box)")
    ap.add_argument("--workers", type=int, default=1, help="data loader workers")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    from datamodules.synthetic import generate_suite

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite"
        generate_suite(suite, per_task=args.per_task, seed=0)
        results = [
            run(suite, Path(tmp) / f"out{b}", b, args.max_new_tokens, args.workers)
            for b in (int(v) for v in args.batch_sizes.split(","))
        ]
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), max_new_tokens {args.max_new_tokens}")
    print("| batch size | records | wall s | samples/s (wall) | samples/s (test_step) |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['batch_size']} | {r['samples']} | {r['wall_s']:.1f} | {r['samples_per_s']:.2f} | "
              f"{r['step_samples_per_s']:.2f} |")  # fmt: skip
    if len(results) > 1:
        print(f"\nbatch {results[-1]['batch_size']} vs batch {results[0]['batch_size']}: "
              f"{results[-1]['samples_per_s'] / results[0]['samples_per_s']:.2f}x samples/s")  # fmt: skip


if __name__ == "__main__":
    main()
