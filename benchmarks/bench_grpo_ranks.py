"""GRPO step time in one process and in several (DDP over gloo, CPU), and the share of the step spent
in the cross-rank agreement (the gathers of `lightning_modules/rl/rl_step.py`, waiting included).

The tiny Qwen3-VL (random, frozen vision tower) on fixed global batches of 4 text prompts x 4 sampled
answers of up to 16 tokens (tests/distributed_grpo_run.py with the HF engine), ``--steps`` RL steps;
the first step of each run is left out (warm-up). Each rank runs one torch thread.

    python benchmarks/bench_grpo_ranks.py                 # 1 and 2 processes, 8 RL steps
    python benchmarks/bench_grpo_ranks.py --worlds 1,2 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, world: int, steps: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "tests.distributed_grpo_run", str(out), str(world), "ddp", "--engine", "hf",
           "--repeats", str(steps // 2)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=3600)
    return json.loads((out / "steps.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--steps", type=int, default=8, help="RL steps (even)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (int(w) for w in args.worlds.split(",")):
            steps = run(Path(tmp) / f"w{world}", world, args.steps)[1:]
            step_s = sum(s["step_seconds"] for s in steps) / len(steps)
            agree_s = sum(s["agreement_seconds"] for s in steps) / len(steps)
            rows.append((world, step_s, agree_s))
    print(f"\n{os.cpu_count()} cores; {args.steps - 1} timed RL steps of 4 prompts x 4 answers (global)")
    print("| processes | step s | vs 1 process | agreement s | agreement share |")
    print("|---:|---:|---:|---:|---:|")
    for world, step_s, agree_s in rows:
        print(
            f"| {world} | {step_s:.2f} | {rows[0][1] / step_s:.2f}x | {agree_s:.3f} | {agree_s / step_s:.1%} |"
        )


if __name__ == "__main__":
    main()
