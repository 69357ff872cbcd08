"""GRPO across processes (gloo, CPU): ranks that keep different numbers of groups finish the fit, and
the step's advantages, EMA state and each update's loss equal one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # a hang fails the test instead of stalling CI


def run(out: Path, world: int, strategy: str = "ddp", *options: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.distributed_grpo_run", str(out), str(world), strategy, *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"MEMBERS {world} done" in proc.stdout, proc.stdout[-2000:]
    return json.loads((out / "steps.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run(tmp_path_factory.mktemp("one"), 1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_rank_without_kept_groups_finishes_and_matches_one_process(
    one_process, strategy: str, tmp_path: Path
):
    one = one_process
    two = run(tmp_path / "two", 2, strategy)
    assert len(one) == len(two) == 2
    # Step 0: only rank 1's two prompts survive the filter; step 1 keeps all four (two per rank).
    assert [k[0] for k in two[0]["kept"]] == [1, 1] and [k[0] for k in two[1]["kept"]] == [0, 0, 1, 1]
    assert [k[0] for k in one[0]["kept"]] == [0, 0]
    for step, (a, b) in enumerate(zip(one, two)):
        assert b["advantages"] == pytest.approx(a["advantages"], abs=1e-12), step
        assert b["ema"] == a["ema"] or _close(b["ema"], a["ema"]), step
        assert len(b["update_losses"]) == len(a["update_losses"]) == len(a["kept"]), (
            step
        )  # prompts_per_update=1
        # FSDP2 reduce-scatters gradients in another order than one process sums them: float32 rounding.
        assert b["update_losses"] == pytest.approx(a["update_losses"], abs=1e-5), step
        assert any(abs(v) > 1e-4 for v in a["update_losses"]), "the losses must be non-trivial to compare"


def _close(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k] == pytest.approx(b[k], rel=1e-12) if isinstance(a[k], float) else
               (_close(a[k], b[k]) if isinstance(a[k], dict) else a[k] == b[k]) for k in a)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_resume_continues_exactly(strategy: str, tmp_path: Path):
    """Two processes, a checkpoint after RL step 2 of 4 (under FSDP2 a sharded, distributed checkpoint);
    the resumed run's steps 3 and 4 (advantages, EMA, every update's loss) equal the uninterrupted run's."""
    full = run(tmp_path / "full", 2, strategy, "--repeats", "2", "--ckpt-dir", str(tmp_path / "ckpt"))
    ckpt = tmp_path / "ckpt" / "rl_step=2.ckpt"
    assert ckpt.is_dir() == (strategy == "fsdp2")  # FSDP2 saves one shard per rank in a folder
    resumed = run(tmp_path / "resumed", 2, strategy, "--repeats", "2", "--resume", str(ckpt), "--skip", "2")
    assert len(full) == 4 and len(resumed) == 2
    assert full[2]["ema"]["updates"] == {"numerical": 3}  # the EMA carried over the checkpoint
    for want, got in zip(full[2:], resumed):
        assert got["kept"] == want["kept"]
        assert got["advantages"] == pytest.approx(want["advantages"], abs=1e-12)
        assert got["ema"] == want["ema"]
        assert got["update_losses"] == pytest.approx(want["update_losses"], abs=1e-6)


@pytest.mark.slow
def test_fsdp2_sampled_rollouts_keep_ranks_in_step(tmp_path: Path):
    """HF generate on a sharded policy: ranks whose answers end at different lengths keep decoding
    together (synced_gpus), and in RL step 2 rank 0, with no prompts, decodes a placeholder with them."""
    steps = run(tmp_path / "hf", 2, "fsdp2", "--engine", "hf", "--drop", "1")
    assert len(steps) == 2 and {k[0] for k in steps[1]["kept"]} <= {1} and steps[1]["update_losses"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_rank_whose_batch_was_all_skipped_joins_with_a_placeholder(strategy: str, tmp_path: Path):
    """RL step 2: every row of rank 0's batch had bad media. Rank 0 rolls out nothing, joins generation
    and the updates with zero-weight placeholders, and the step equals one process on rank 1's rows."""
    one = run(tmp_path / "one", 1, "ddp", "--drop", "1")
    two = run(tmp_path / "two", 2, strategy, "--drop", "1")
    assert [k[0] for k in two[1]["kept"]] == [1, 1] and len(one[1]["kept"]) == 2
    for step, (a, b) in enumerate(zip(one, two)):
        assert b["advantages"] == pytest.approx(a["advantages"], abs=1e-12), step
        assert b["update_losses"] == pytest.approx(a["update_losses"], abs=1e-5), step


@pytest.fixture(scope="module")
def one_process_vision(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run(tmp_path_factory.mktemp("one_vision"), 1, "ddp", "--drop", "1", "--repeats", "2", "--images")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_trainable_vision_tower_with_a_text_only_rank(one_process_vision, strategy: str, tmp_path: Path):
    """Prompts with images and the vision tower trained; in RL step 2 rank 0 runs a text-only
    placeholder row, which does not reach the tower while rank 1's rows do. The ranks still reduce
    the same gradients (vision_grad_anchor; without it gloo reports a broken collective), and steps 3
    and 4, which run on the tower that step 2 updated, equal one process."""
    one = one_process_vision
    two = run(tmp_path / "two", 2, strategy, "--drop", "1", "--repeats", "2", "--images")
    assert len(one) == len(two) == 4 and [k[0] for k in two[1]["kept"]] == [1, 1]
    for step, (a, b) in enumerate(zip(one, two)):
        assert b["advantages"] == pytest.approx(a["advantages"], abs=1e-12), step
        assert b["update_losses"] == pytest.approx(a["update_losses"], abs=1e-5), step


@pytest.mark.slow
def test_vllm_engine_keeps_ranks_in_step_under_fsdp2(tmp_path: Path):
    """`VLLMColocateEngine` (on a fake vLLM) under FSDP2: in RL step 2 rank 0 has no prompts, yet it
    joins every weight gather and generate call; the run equals one process on the same batches."""
    one = run(tmp_path / "one", 1, "ddp", "--engine", "fake-vllm", "--drop", "1")
    two = run(tmp_path / "two", 2, "fsdp2", "--engine", "fake-vllm", "--drop", "1")
    for step, (a, b) in enumerate(zip(one, two)):
        assert b["advantages"] == pytest.approx(a["advantages"], abs=1e-12), step
        assert b["update_losses"] == pytest.approx(a["update_losses"], abs=1e-5), step
    calls = [json.loads((tmp_path / "two" / f"engine_calls.rank{r}.json").read_text()) for r in range(2)]
    kinds = [[c[0] for c in rank] for rank in calls]
    assert kinds[0] == kinds[1]  # the same loads, wakes, generates and sleeps on both ranks
    assert kinds[0].count("load") == 2 and kinds[0].count("generate") == 2  # one per RL step
