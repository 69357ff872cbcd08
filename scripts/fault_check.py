"""Fault injection, end to end on the tiny model: each fault against the outcome a user must get.

    python scripts/fault_check.py --work outputs/fault_check     (or: bash scripts/fault_check.sh)

1. SIGKILL during RL at a random moment after the first checkpoint, then resume from ``last.ckpt``:
   the final weights and optimizer state equal an uninterrupted run's, bit for bit (same machine).
2. SIGKILL during evaluation, then a torn half row appended to ``predictions.jsonl``, then a re-run:
   ``metrics.json`` equals an uninterrupted run's.
3. A full disk during a checkpoint (the process's file-size limit lowered once the first checkpoint
   exists, so the next save fails): the fit fails, the previous checkpoint loads, no partial file is
   left, and a resume from it completes.
4. An output folder that cannot be created: a one-line error before any model is built.
5. Corrupt media in a third of the SFT rows: the fit completes and logs the skips; with every row
   corrupt it fails with the counts.

Prints a markdown table (fault, expected, outcome, ok) and exits 1 if any outcome is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
TINY = [
    "--model.init_args.backbone.init_args.model_name_or_path=tiny",
    "--model.init_args.backbone.init_args.tiny_vocab=synthetic",
    "--model.init_args.backbone.init_args.tiny_hidden=128",
    "--model.init_args.backbone.init_args.tiny_layers=2",
]


def onethinker(args: list[str], log: Path, wait: bool = True) -> subprocess.Popen | int:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    return proc.wait() if wait else proc


def csv_logger(run: Path) -> str:
    return "--trainer.logger=" + json.dumps(
        [
            {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(run), "name": "csv"},
            }
        ]
    )


def checkpoints(run: Path, every: int, extra: list[dict] = ()) -> str:
    ckpt = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "dirpath": str(run / "ckpt"),
            "filename": "{step}",
            "every_n_train_steps": every,
            "save_last": True,
            "save_top_k": -1,
        },
    }
    return "--trainer.callbacks=" + json.dumps([*extra, ckpt])


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> bool:
    start = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            return False
        time.sleep(0.2)
    return True


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def same_state(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    weights = all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    opt_a, opt_b = sa["optimizer_states"][0]["state"], sb["optimizer_states"][0]["state"]
    optim = all(
        torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i] if torch.is_tensor(opt_a[i][k])
    )
    return weights and optim and sa["global_step"] == sb["global_step"]


# ---------------------------------------------------------------------------------------------- faults
def rl_args(work: Path, run: Path) -> list[str]:
    stats = {"class_path": "callbacks.task_reward_stats.TaskRewardStatsCallback"}
    return [
        "fit", "--config", str(EXPERIMENTS / "shared" / "trainer_cpu.yaml"),
        "--config", str(EXPERIMENTS / "demo" / "ema_grpo.yaml"), *TINY,
        "--model.init_args.rollout.init_args.max_new_tokens=8", "--model.init_args.rollouts_per_prompt=4",
        "--model.init_args.val_samples=0", "--trainer.max_steps=16",  # 4 RL steps of 4 updates
        f"--data.synthetic_suite={work / 'suite'}", f"--data.train_manifests=[{work / 'suite' / 'rl.json'}]",
        "--data.val_manifests=null", f"--trainer.default_root_dir={run}", csv_logger(run),
        checkpoints(run, 4, [stats]),
    ]  # fmt: skip


def kill_during_rl(work: Path) -> tuple[str, bool]:
    whole, cut = work / "rl_whole", work / "rl_killed"
    if onethinker(rl_args(work, whole), work / "rl_whole.log") != 0:
        return "uninterrupted run failed (rl_whole.log)", False
    proc = onethinker(rl_args(work, cut), work / "rl_killed.log", wait=False)
    if not wait_for(cut / "ckpt" / "step=4.ckpt", proc):
        kill(proc)
        return "no first checkpoint (rl_killed.log)", False
    delay = random.uniform(0.0, 8.0)
    time.sleep(delay)
    died = proc.poll() is None
    kill(proc)
    resumed = onethinker(
        [*rl_args(work, cut), f"--ckpt_path={cut / 'ckpt' / 'last.ckpt'}"], work / "rl_resumed.log"
    )
    if resumed != 0:
        return "resume failed (rl_resumed.log)", False
    equal = same_state(whole / "ckpt" / "last.ckpt", cut / "ckpt" / "last.ckpt")
    when = f"killed {delay:.1f} s after the step-4 checkpoint" + (
        "" if died else " (it had already finished)"
    )
    return f"{when}; resumed to step 16; weights and optimizer {'equal' if equal else 'DIFFER'}", equal


def eval_args(work: Path, run: Path) -> list[str]:
    return [
        "test", "--config", str(EXPERIMENTS / "eval" / "demo.yaml"), *TINY,
        "--model.init_args.max_new_tokens=16", f"--model.init_args.output_dir={run}",
        f"--data.synthetic_suite={work / 'suite'}", f"--data.test_manifests=[{work / 'suite' / 'eval.json'}]",
        "--data.eval_batch_size=2", f"--trainer.default_root_dir={run}", csv_logger(run),
    ]  # fmt: skip


def figures(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data["benchmarks"]


def kill_during_eval(work: Path) -> tuple[str, bool]:
    whole, cut = work / "eval_whole", work / "eval_killed"
    if onethinker(eval_args(work, whole), work / "eval_whole.log") != 0:
        return "uninterrupted evaluation failed (eval_whole.log)", False
    proc = onethinker(eval_args(work, cut), work / "eval_killed.log", wait=False)
    predictions = cut / "predictions.jsonl"
    if not wait_for(predictions, proc):
        kill(proc)
        return "no predictions written (eval_killed.log)", False
    time.sleep(random.uniform(0.0, 3.0))
    kill(proc)
    rows = len(predictions.read_text().splitlines())
    with predictions.open("a") as f:
        f.write('{"benchmark": "synthetic", "problem_id": 3, "resp')  # a row torn mid-write
    if onethinker(eval_args(work, cut), work / "eval_rerun.log") != 0:
        return "re-run failed (eval_rerun.log)", False
    equal = figures(whole / "metrics.json") == figures(cut / "metrics.json")
    return (
        f"killed after {rows} rows, torn row appended; metrics.json {'equal' if equal else 'DIFFERS'}",
        equal,
    )


def sft_args(work: Path, run: Path, manifest: Path, steps: int = 6) -> list[str]:
    return [
        "fit", "--config", str(EXPERIMENTS / "shared" / "trainer_cpu.yaml"),
        "--config", str(EXPERIMENTS / "demo" / "sft.yaml"), *TINY,
        f"--trainer.max_steps={steps}", "--data.synthetic_suite=null", f"--data.train_manifests=[{manifest}]",
        f"--trainer.default_root_dir={run}", csv_logger(run),
        checkpoints(run, 2, [{"class_path": "callbacks.data_stats.SkippedRowsLogger"}]), "--trainer.log_every_n_steps=1",
    ]  # fmt: skip


def full_disk(work: Path) -> tuple[str, bool]:
    run = work / "disk_full"
    proc = onethinker(sft_args(work, run, work / "suite" / "sft.json", 8), work / "disk_full.log", wait=False)
    first = run / "ckpt" / "step=2.ckpt"
    if not wait_for(first, proc):
        kill(proc)
        return "no first checkpoint (disk_full.log)", False
    time.sleep(1.0)  # the save has finished (last.ckpt is written next to it)
    limit = first.stat().st_size // 2
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))  # Python gets EFBIG, not SIGXFSZ
    rc = proc.wait()
    left = sorted(p.name for p in (run / "ckpt").iterdir())
    loadable = all(torch.load(run / "ckpt" / name, weights_only=False)["global_step"] > 0 for name in left)
    partial = [n for n in left if not n.endswith(".ckpt")]
    resumed = onethinker([*sft_args(work, run, work / "suite" / "sft.json", 8),
                          f"--ckpt_path={run / 'ckpt' / 'last.ckpt'}"], work / "disk_resumed.log")  # fmt: skip
    ok = rc != 0 and loadable and not partial and resumed == 0
    return f"fit exit {rc}; left {left}, all loadable: {loadable}; resume exit {resumed}", ok


def unwritable_output(work: Path) -> tuple[str, bool]:
    blocker = work / "a_file"
    blocker.write_text("not a folder\n")
    log = work / "unwritable.log"
    rc = onethinker(sft_args(work, blocker / "run", work / "suite" / "sft.json"), log)
    text = log.read_text()
    line = next((ln for ln in text.splitlines() if "cannot write" in ln), "")
    ok = rc == 2 and bool(line) and "Traceback" not in text
    return f"exit {rc}: {line.strip()[:120]}", ok


def corrupt_media(work: Path) -> tuple[str, bool]:
    bad = work / "suite_corrupt"
    if not bad.exists():
        shutil.copytree(work / "suite", bad)
    records = json.loads((bad / "sft.json").read_text())
    media = sorted({m for r in records for m in r.get("images", []) + r.get("videos", [])})
    for path in media[::3]:
        (bad / path).write_bytes(b"not an image or a video")
    run = work / "corrupt_third"
    rc = onethinker(sft_args(work, run, bad / "sft.json"), work / "corrupt_third.log")
    csv = next(run.rglob("metrics.csv"), None)
    columns = csv.read_text().splitlines()[0].split(",") if csv else []
    skipped = [c for c in columns if c.startswith("train/skipped/")]
    for path in media:
        (bad / path).write_bytes(b"not an image or a video")
    log = work / "corrupt_all.log"
    rc_all = onethinker(sft_args(work, work / "corrupt_all", bad / "sft.json"), log)
    text = log.read_text()
    named = "skipped" in text and "Traceback" not in text
    ok = rc == 0 and bool(skipped) and rc_all != 0 and named
    return (
        f"a third: exit {rc}, {len(skipped)} skip counters logged; all: exit {rc_all}, counts named, no traceback: {named}",
        ok,
    )


FAULTS: list[tuple[str, str, Callable[[Path], tuple[str, bool]]]] = [
    ("SIGKILL during RL, resume", "same weights and optimizer as an uninterrupted run", kill_during_rl),
    ("SIGKILL during evaluation, torn row", "metrics.json equal to an uninterrupted run's", kill_during_eval),
    (
        "full disk during a checkpoint",
        "fit fails; previous checkpoint loads; no partial file; resume works",
        full_disk,
    ),
    ("unwritable output folder", "one-line error naming the folder, exit 2, no traceback", unwritable_output),
    (
        "corrupt media in a third of rows",
        "fit completes, skips logged; all corrupt: fails with counts",
        corrupt_media,
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="outputs/fault_check", help="scratch folder (emptied first)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--only", default="", help="comma-separated fault numbers (1-5) to run")
    args = parser.parse_args()
    random.seed(args.seed)
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sys.path.insert(0, str(ROOT))
    from datamodules.synthetic import generate_suite

    generate_suite(work / "suite", per_task=1, seed=0)
    chosen = {int(i) for i in args.only.split(",") if i.strip()} or set(range(1, len(FAULTS) + 1))
    rows, failed = [], 0
    for number, (fault, expected, check) in enumerate(FAULTS, start=1):
        if number not in chosen:
            continue
        started = time.perf_counter()
        outcome, ok = check(work)
        failed += not ok
        rows.append(
            f"| {fault} | {expected} | {outcome} | {'yes' if ok else 'NO'} | {time.perf_counter() - started:.0f} s |"
        )
        print(rows[-1], flush=True)
    print("\n| fault | expected | outcome | ok | time |\n|---|---|---|---|---:|\n" + "\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
