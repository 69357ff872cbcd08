"""`run_demo`'s orchestration: stage order, torch threads per stage, the reward table and the
per-stage wall times (the stages themselves are stubbed; test_experiments runs the recipes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import experiments.demo as demo


def test_run_demo_sets_threads_per_stage_and_reports_stage_times(monkeypatch, tmp_path: Path, capsys):
    seen: list[tuple[str, int]] = []

    def stage(name: str, result=None):
        def run(*args, **kwargs):
            seen.append((name, torch.get_num_threads()))
            return result(*args, **kwargs) if callable(result) else result

        return run

    def rewards(out, paths, model, name, ckpt=None):
        value = 0.25 if name == "eval_before" else 0.5
        return {"val/reward/overall": value, "val/sampled_reward/overall": value / 2}

    monkeypatch.setattr(
        demo, "generate_suite", stage("suite", {"rl": "rl.json", "sft": "sft.json", "eval": "eval.json"})
    )
    monkeypatch.setattr(demo, "show_batches", stage("batches"))
    monkeypatch.setattr(demo, "run_sft_demo", stage("sft", tmp_path / "sft_hf"))
    monkeypatch.setattr(demo, "evaluate_rewards", stage("eval", rewards))
    monkeypatch.setattr(demo, "run_grpo_demo", stage("grpo", tmp_path / "last.ckpt"))
    threads = torch.get_num_threads()
    try:
        out = demo.run_demo(tmp_path, sft_threads=2, rl_threads=1)
    finally:
        torch.set_num_threads(threads)

    assert seen == [
        ("suite", threads),
        ("batches", threads),
        ("sft", 2),
        ("eval", 1),
        ("grpo", 1),
        ("eval", 1),
    ]
    assert out["before"]["val/reward/overall"] == 0.25 and out["after"]["val/reward/overall"] == 0.5
    table = (tmp_path / "rewards_before_after.md").read_text()
    assert "| **all** | 0.125 | 0.250 | +0.125 | 0.250 | 0.500 | +0.250 |" in table
    printed = capsys.readouterr().out
    report = printed.split("== Wall time per stage ==")[1]
    for name in ("synthetic suite", "SFT + export (2 threads)", "evaluation before RL (1 threads)",
                 "EMA-GRPO (1 threads)", "evaluation after RL (1 threads)", "total"):  # fmt: skip
        assert name in report, name

    seen.clear()
    assert demo.run_demo(tmp_path, sft_only=True) == {}
    assert [name for name, _ in seen] == ["suite", "batches", "sft"]


def test_stage_timer_sums_the_stages(monkeypatch):
    clock = iter([10.0, 13.5, 20.0, 80.3])
    monkeypatch.setattr(demo.time, "perf_counter", lambda: next(clock))
    timer = demo.StageTimer()
    with timer("a"):
        pass
    with timer("b"):
        pass
    assert timer.seconds == {"a": 3.5, "b": pytest.approx(60.3)}
    lines = timer.report().splitlines()
    assert lines[0].split() == ["a", "0", "min", "3.5", "s"]
    assert lines[1].split() == ["b", "1", "min", "0.3", "s"]
    assert lines[2].split() == ["total", "1", "min", "3.8", "s"]


def test_demo_overrides_move_logs_and_checkpoints_under_out(tmp_path: Path):
    """The demo's last config, composed by the LightningCLI parser after the recipe: loggers and the
    checkpoint folder under ``out``, the recipe's other callbacks kept, data and steps overridden."""
    from experiments.compose import compose, logger_entries, short_class

    recipe = demo.CONFIGS / "demo" / "sft.yaml"
    before = compose([*demo.SHARED, recipe])["trainer"]
    last = demo._overrides(tmp_path, recipe, "sft", {"train_manifests": ["x.json"]}, {"max_steps": 3})
    composed = compose([*demo.SHARED, recipe, last])
    trainer = composed["trainer"]
    loggers = {short_class(e): e["init_args"] for e in logger_entries(trainer)}
    assert set(loggers) == {"WandbLogger", "CSVLogger"}
    assert {lg["save_dir"] for lg in loggers.values()} == {str(tmp_path)}
    assert (loggers["WandbLogger"]["name"], loggers["CSVLogger"]["name"]) == ("demo-sft", "csv-sft")
    assert [short_class(c) for c in trainer["callbacks"]] == [short_class(c) for c in before["callbacks"]]
    checkpoint = next(c for c in trainer["callbacks"] if short_class(c) == "ModelCheckpoint")
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "sft_checkpoints")
    assert trainer["max_steps"] == 3 and trainer["default_root_dir"] == str(tmp_path)
    assert composed["data"]["train_manifests"] == ["x.json"] and composed["data"]["synthetic_suite"] is None


def test_the_demo_subcommand_passes_its_typed_flags(monkeypatch, tmp_path: Path):
    from experiments.cli import main

    calls = {}
    monkeypatch.setattr(demo, "generate_suite", lambda out, **kw: calls.update(suite=(out, kw)) or {})
    monkeypatch.setattr(demo, "show_batches", lambda paths: None)
    monkeypatch.setattr(demo, "run_sft_demo", lambda out, paths, steps: calls.update(sft=(out, steps)))
    threads = torch.get_num_threads()
    try:
        argv = ["demo", "--out", str(tmp_path), "--per_task", "2", "--seed", "5", "--sft_steps", "7"]
        assert main([*argv, "--sft_only", "true", "--sft_threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert calls["suite"] == (tmp_path / "synthetic", {"per_task": 2, "seed": 5})
    assert calls["sft"] == (tmp_path, 7)
