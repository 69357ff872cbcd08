"""Every rank's place in the data after a resume, through the real `OneThinkerDataModule` under DDP
(two gloo processes, tests/data_resume_run.py). Lightning checkpoints rank 0's data-module state
only; it is every rank's because all ranks consume the same number of batches of the same size,
and a skipped row still counts as consumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # a hang fails the test instead of stalling CI


def run(suite: Path, out: Path, *options: str) -> list[list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.data_resume_run", str(suite), str(out), "2", *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "MEMBERS 2 done" in proc.stdout, proc.stdout[-2000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_every_rank_resumes_where_it_stopped(tmp_path: Path):
    from datamodules.synthetic import generate_suite

    generate_suite(tmp_path / "suite", per_task=1, seed=0)
    suite = tmp_path / "suite"
    (suite / "media" / "images" / "rl_image_multiple_choice_0000.png").write_bytes(
        b"not an image"
    )  # problem 0
    full = run(suite, tmp_path / "full")
    resumed = run(suite, tmp_path / "resumed", "--resume", str(tmp_path / "full" / "ckpt" / "step=2.ckpt"))
    for rank in range(2):
        assert [s["step"] for s in full[rank]] == [1, 2, 3, 4] and [s["step"] for s in resumed[rank]] == [
            3,
            4,
        ]
        assert resumed[rank] == full[rank][2:], rank
    assert full[0] != full[1]  # the ranks read different rows
    assert (
        sum(s["skipped"] for r in full for s in r) > 0
    )  # a row was skipped before the checkpoint or after it
