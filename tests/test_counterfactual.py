"""The counterfactual ablation on a real GRPO fit's recorded rewards: replaying the run's own estimator
reproduces its advantages (EMA-GRPO's statistics included), the three estimators are summarised per
task with a table and a plot, and a run without records or a missing seed fails naming the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from callbacks.reward_record import RECORD_FILE, RewardRecordCallback
from experiments.counterfactual import (
    CounterfactualError,
    own_estimator_gap,
    read_records,
    replay,
    run_counterfactual,
)
from tests.test_grpo import grpo_run, mixed_task_manifest, toy_rewards  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ablation_dir(toy_rewards, tmp_path: Path) -> Path:  # noqa: F811
    """``<out>/<advantage>/seed0`` for EMA-GRPO and GRPO: 4 RL steps each, rewards recorded."""
    manifest = mixed_task_manifest(tmp_path)
    for advantage in ("ema_grpo", "grpo"):
        run_dir = tmp_path / "out" / advantage / "seed0"
        grpo_run(
            manifest,
            4,
            advantage=advantage,
            extra_callbacks=[RewardRecordCallback(str(run_dir))],
            max_resample=1,
        )
    return tmp_path / "out"


def test_replaying_the_runs_own_estimator_reproduces_its_advantages(ablation_dir: Path):
    for advantage in ("ema_grpo", "grpo"):
        records = read_records(ablation_dir / advantage / "seed0")
        assert len(records) >= 2 and {r["estimator"] for r in records} == {advantage}
        assert own_estimator_gap(records) < 1e-6
    # the check can fail: replaying with another estimator does not give the recorded advantages
    records = read_records(ablation_dir / "ema_grpo" / "seed0")
    result, _ = replay(records, "dr_grpo")[0]
    assert (
        result.advantages.double() - torch.tensor(records[0]["advantages"], dtype=torch.float64)
    ).abs().max() > 1e-3


def test_ema_grpo_replay_needs_the_statistics_carried_over(ablation_dir: Path):
    """Later steps depend on the EMA that earlier steps updated: starting each step afresh differs."""
    records = read_records(ablation_dir / "ema_grpo" / "seed0")
    assert records[-1]["ema_before"]["updates"]  # the EMA had been updated before the last step
    fresh = [dict(r, ema_before=None) for r in records[-1:]]
    result, _ = replay(fresh, "ema_grpo")[0]
    recorded = torch.tensor(records[-1]["advantages"], dtype=torch.float64)
    assert (result.advantages.double() - recorded).abs().max() > 1e-6


def test_summary_table_and_plot(ablation_dir: Path):
    result = run_counterfactual(ablation_dir, ["ema_grpo", "grpo"], [0], "toy")
    assert set(result["shares"]) == {"grpo", "dr_grpo", "ema_grpo"}
    for per_task in result["shares"].values():
        assert per_task["numerical"]["mass_share"] == pytest.approx(
            1.0
        )  # the only task that survives filtering
    table = Path(result["table"]).read_text()
    assert "| numerical |" in table and "ema_grpo share" in table
    assert Path(result["plot"]).stat().st_size > 1000
    assert set(json.loads((ablation_dir / "counterfactual.json").read_text())["own_gap"]) == {
        "ema_grpo/seed0",
        "grpo/seed0",
    }


def test_unfinished_last_line_is_skipped(ablation_dir: Path):
    path = ablation_dir / "grpo" / "seed0" / RECORD_FILE
    whole = len(read_records(path.parent))
    with path.open("a") as f:
        f.write('{"step": 99, "groups": [')  # a crash mid-line
    with pytest.warns(UserWarning, match="1 unreadable line"):
        assert len(read_records(path.parent)) == whole


def test_bad_input_names_the_run(ablation_dir: Path, tmp_path: Path):
    (ablation_dir / "dr_grpo" / "seed0").mkdir(parents=True)
    with pytest.raises(CounterfactualError, match=r"run .*dr_grpo/seed0 has no rewards.jsonl"):
        run_counterfactual(ablation_dir, ["dr_grpo"], [0])
    with pytest.raises(CounterfactualError, match="run grpo seed 1 is missing"):
        run_counterfactual(ablation_dir, ["grpo"], [0, 1])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "experiments.cli",
        "ablate",
        "--counterfactual",
        "true",
        "--out",
        str(ablation_dir),
        "--advantages",
        "grpo",
        "--seeds",
        "[0, 1]",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "run grpo seed 1 is missing" in proc.stderr
