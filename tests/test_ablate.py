"""`onethinker ablate`: run arguments, CSV curves, the final-reward table and the plot (synthetic logs)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments import ablate
from experiments.ablate import (
    START,
    build_fit_args,
    build_validate_args,
    collect_curves,
    configured_trainer,
    configured_wandb,
    final_rewards,
    markdown_table,
    read_task_curves,
    run_ablation,
    seed_band,
    seed_list,
)

M = "train/reward/overall"
SEG = f"{M}/segmentation/image"

# advantage -> seed -> {column: [(step, value), ...]}
SERIES = {
    "grpo": {
        0: {
            f"{M}/math": [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)],
            M: [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)],
        },
        1: {
            f"{M}/math": [(0, 0.2), (1, 0.3), (2, 0.5), (3, 0.7)],
            M: [(0, 0.2), (1, 0.3), (2, 0.5), (3, 0.7)],
        },
    },
    "ema_grpo": {
        0: {f"{M}/math": [(0, 0.5), (1, 0.6), (2, 0.7), (3, 0.8)], SEG: [(1, 0.2), (3, 0.6)], M: [(3, 0.9)]},
        1: {f"{M}/math": [(0, 0.4), (1, 0.6), (2, 0.8), (3, 1.0)], M: [(3, 0.5)]},
    },
}


def write_metrics(path: Path, columns: dict[str, list[tuple[int, float]]]) -> None:
    """A CSVLogger-style file: one row per step, empty cells for metrics not logged at that step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["epoch", "step", "train/loss", *sorted(columns), "val/reward/overall"]
    steps = sorted({s for pts in columns.values() for s, _ in pts})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        for step in steps:
            row = {"epoch": 0, "step": step, "train/loss": 1.0 / (step + 1)}
            row.update({c: v for c, pts in columns.items() for s, v in pts if s == step})
            w.writerow(row)
        w.writerow({"epoch": 0, "step": steps[-1], "val/reward/overall": 0.5})  # a validation row


def flag(args: list[str], name: str) -> str:
    """The value of ``--name=value`` in a generated command line."""
    return next(a for a in args if a.startswith(name + "=")).split("=", 1)[1]


def synthetic_runs(root: Path) -> dict[tuple[str, int], Path]:
    runs = {}
    for adv, seeds in SERIES.items():
        for seed, columns in seeds.items():
            run = root / adv / f"seed{seed}"
            write_metrics(run / "csv" / "version_0" / "metrics.csv", columns)
            runs[(adv, seed)] = run
    return runs


def test_seed_list():
    assert seed_list(3) == [0, 1, 2]
    assert seed_list([5, 7]) == [5, 7]
    with pytest.raises(ValueError):
        seed_list(0)
    with pytest.raises(ValueError):
        seed_list([1, 1])


def test_read_task_curves(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics(path, SERIES["ema_grpo"][0])
    curves = read_task_curves(path)
    assert set(curves) == {"math", "segmentation/image", "all"}
    steps, values = curves["segmentation/image"]
    assert steps.tolist() == [1, 3] and values.tolist() == [0.2, 0.6]  # empty cells skipped
    assert curves["all"][0].tolist() == [3]


def test_final_rewards_hand_computed(tmp_path):
    curves = collect_curves(synthetic_runs(tmp_path))
    final = final_rewards(curves, last_k=2)
    # grpo math: seed0 mean(0.3, 0.4) = 0.35, seed1 mean(0.5, 0.7) = 0.6
    g = final["math"]["grpo"]
    assert g["mean"] == pytest.approx(0.475)
    assert g["std"] == pytest.approx(0.25 / math.sqrt(2))  # sample std of two values: |a - b| / sqrt(2)
    assert g["n"] == 2
    # ema_grpo math: seed0 mean(0.7, 0.8) = 0.75, seed1 mean(0.8, 1.0) = 0.9
    e = final["math"]["ema_grpo"]
    assert (e["mean"], e["std"]) == (pytest.approx(0.825), pytest.approx(0.15 / math.sqrt(2)))
    # segmentation/image: one ema_grpo seed only
    assert final["segmentation/image"] == {"ema_grpo": {"mean": pytest.approx(0.4), "std": 0.0, "n": 1}}
    # all tasks pooled: last 2 of a single point is that point
    assert final["all"]["ema_grpo"]["mean"] == pytest.approx(0.7)
    assert final["all"]["ema_grpo"]["std"] == pytest.approx(0.4 / math.sqrt(2))
    # last_k = 1: the last values
    assert final_rewards(curves, last_k=1)["math"]["grpo"]["mean"] == pytest.approx(0.55)


def test_markdown_table(tmp_path):
    curves = collect_curves(synthetic_runs(tmp_path))
    text = markdown_table(
        final_rewards(curves, last_k=2), ["grpo", "ema_grpo"], last_k=2, name="abl", n_seeds=2
    )
    lines = text.splitlines()
    header = lines.index("| task | grpo | ema_grpo |")
    assert lines[header + 1] == "|---|---:|---:|"
    rows = lines[header + 2 :]
    assert rows[0] == "| math | 0.475 ± 0.177 | **0.825 ± 0.106** |"
    assert rows[1] == "| segmentation/image | — | 0.400 ± 0.000 (n=1) |"
    assert rows[2] == "| all | 0.475 ± 0.177 | **0.700 ± 0.283** |"  # `all` last
    tied = {"math": {a: {"mean": 0.5, "std": 0.0, "n": 1} for a in ("grpo", "ema_grpo")}}
    assert (
        markdown_table(tied, ["grpo", "ema_grpo"], 1).splitlines()[-1]
        == "| math | 0.500 ± 0.000 | 0.500 ± 0.000 |"
    )


def test_seed_band_interpolates_on_the_union_of_steps():
    by_seed = {0: (np.array([0, 2]), np.array([0.0, 2.0])), 1: (np.array([1, 3]), np.array([1.0, 5.0]))}
    steps, mean, lo, hi = seed_band(by_seed)
    assert steps.tolist() == [0, 1, 2, 3]
    # seed0 on the grid: 0, 1, 2, -; seed1: -, 1, 3, 5
    assert mean.tolist() == pytest.approx([0.0, 1.0, 2.5, 5.0])
    assert lo.tolist() == pytest.approx([0.0, 1.0, 2.0, 5.0])
    assert hi.tolist() == pytest.approx([0.0, 1.0, 3.0, 5.0])


def test_summarize_writes_plot_and_table(tmp_path):
    from PIL import Image

    runs = synthetic_runs(tmp_path / "runs")
    runs[("dr_grpo", 0)] = tmp_path / "runs" / "dr_grpo" / "seed0"  # no metrics.csv: skipped with a warning
    with pytest.warns(UserWarning, match="no metrics.csv"):
        out = ablate.summarize(
            runs, tmp_path, name="abl", last_k=2, advantages=["grpo", "dr_grpo", "ema_grpo"], seeds=[0, 1]
        )
    png = Image.open(out["plot"])
    assert png.format == "PNG" and png.size[0] > 400
    table = Path(out["table"]).read_text()
    assert "| task | grpo | dr_grpo | ema_grpo |" in table
    assert "| math | 0.475 ± 0.177 | — | **0.825 ± 0.106** |" in table
    assert json.loads((tmp_path / "ablation_final.json").read_text())["math"]["grpo"]["n"] == 2


def write_configs(tmp_path: Path) -> list[Path]:
    base = tmp_path / "base.yaml"
    base.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: callbacks.run_summary.RunSummary\n"
        "  logger:\n"
        "    - class_path: lightning.pytorch.loggers.WandbLogger\n"
        "      init_args: {project: p, group: g, name: n, tags: [demo], save_dir: outputs/x, offline: true}\n"
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: callbacks.task_reward_stats.TaskRewardStatsCallback\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {dirpath: outputs/fixed, save_last: true}\n"
        "model:\n"
        "  class_path: lightning_modules.grpo.GRPOModule\n"
        "  init_args:\n    backbone:\n"
        "      class_path: lightning_modules.model.backbone.VisionLanguageBackbone\n"
        "      init_args: {model_name_or_path: tiny}\n"
    )
    return [base, recipe]


def test_build_fit_args(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    configs = write_configs(tmp_path)
    trainer = configured_trainer(configs)  # merged by the LightningCLI parser: the recipe's callbacks win
    wandb_args, callbacks = configured_wandb(trainer), trainer["callbacks"]
    assert wandb_args["project"] == "p" and wandb_args["group"] == "g"
    assert [c["class_path"].split(".")[-1] for c in callbacks] == [
        "TaskRewardStatsCallback",
        "ModelCheckpoint",
    ]
    run_dir = tmp_path / "out" / "dr_grpo" / "seed3"
    args = build_fit_args(
        configs, "dr_grpo", 3, run_dir, "abl", ["--trainer.max_steps=2"], wandb_args, callbacks
    )
    assert args[:6] == [
        "fit",
        "--config",
        str(configs[0]),
        "--config",
        str(configs[1]),
        "--trainer.max_steps=2",
    ]
    assert "--model.init_args.advantage=dr_grpo" in args
    assert "--seed_everything=3" in args and "--model.init_args.seed=3" in args and "--data.seed=3" in args
    assert f"--trainer.default_root_dir={run_dir}" in args
    loggers = json.loads(flag(args, "--trainer.logger"))
    assert loggers[0] == {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": "csv", "version": 0},
    }
    w = loggers[1]["init_args"]
    assert loggers[1]["class_path"].endswith("WandbLogger")
    assert (w["group"], w["name"], w["save_dir"], w["offline"], w["project"]) == (
        "abl",
        "dr_grpo-seed3",
        str(run_dir),
        True,
        "p",
    )
    assert w["tags"] == ["demo", "ablation", "dr_grpo"]
    cbs = json.loads(flag(args, "--trainer.callbacks"))
    assert cbs[1]["init_args"]["dirpath"] == str(run_dir / "checkpoints") and cbs[1]["init_args"]["save_last"]

    monkeypatch.setenv("WANDB_MODE", "online")
    online = build_fit_args(configs, "grpo", 0, run_dir, "abl", [], wandb_args, None)
    loggers = json.loads(next(a for a in online if a.startswith("--trainer.logger=")).split("=", 1)[1])
    assert loggers[1]["init_args"]["offline"] is False
    assert not any(a.startswith("--trainer.callbacks") for a in online)
    # no WandbLogger configured: CSV only
    only_csv = build_fit_args(configs[1:], "grpo", 0, run_dir, "abl")
    loggers = json.loads(next(a for a in only_csv if a.startswith("--trainer.logger=")).split("=", 1)[1])
    assert [lg["class_path"].split(".")[-1] for lg in loggers] == ["CSVLogger"]


def test_run_ablation_with_fake_fit(tmp_path, monkeypatch):
    """The orchestration end to end, with `onethinker fit` replaced by a writer of synthetic logs."""
    configs = write_configs(tmp_path)
    calls = []

    def fake_run(cmd, stdout, stderr, env, check):
        args = cmd[3:]
        assert cmd[1:4] == ["-m", "experiments.cli", "fit"]
        adv = flag(args, "--model.init_args.advantage")
        seed = int(flag(args, "--seed_everything"))
        run_dir = Path(flag(args, "--trainer.default_root_dir"))
        calls.append((adv, seed))
        if adv == "dr_grpo" and seed == 1:
            stdout.write("Traceback: boom\n")
            return subprocess.CompletedProcess(cmd, 1)
        columns = SERIES["ema_grpo" if adv == "ema_grpo" else "grpo"][seed]
        write_metrics(run_dir / "csv" / "version_0" / "metrics.csv", columns)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    out = tmp_path / "abl"
    result = run_ablation(
        [str(c) for c in configs],
        ["grpo", "dr_grpo", "ema_grpo"],
        2,
        str(out),
        ["--trainer.max_steps=4"],
        last_k=2,
    )
    assert calls == [
        ("grpo", 0),
        ("grpo", 1),
        ("dr_grpo", 0),
        ("dr_grpo", 1),
        ("ema_grpo", 0),
        ("ema_grpo", 1),
    ]
    assert result["name"] == "abl" and result["failed"] == ["dr_grpo/seed1"]
    assert (out / "grpo" / "seed0" / "DONE").exists() and not (out / "dr_grpo" / "seed1" / "DONE").exists()
    assert "boom" in (out / "dr_grpo" / "seed1" / "fit.log").read_text()
    assert json.loads((out / "ema_grpo" / "seed1" / "command.json").read_text())[3] == "fit"
    assert Path(result["plot"]) == out / "ablation_rewards.png" and Path(result["plot"]).stat().st_size > 0
    assert result["final"]["math"]["grpo"]["mean"] == pytest.approx(0.475)
    assert result["final"]["math"]["dr_grpo"]["n"] == 1  # the failed seed is left out
    assert "0.350 ± 0.000 (n=1)" in (out / "ablation_table.md").read_text()

    # skip_done keeps finished runs and reruns the failed one only
    calls.clear()
    run_ablation(
        [str(c) for c in configs], ["grpo", "dr_grpo", "ema_grpo"], 2, str(out), [], last_k=2, skip_done=True
    )
    assert calls == [("dr_grpo", 1)]


def test_parallel_ablation_reports_gains_over_the_starting_model(tmp_path, monkeypatch):
    """Two runs at a time with one thread each; the starting model is evaluated once per seed first, and
    the held-out table gives each estimator's gain over it on the same seed.
    Greedy start 0.30 / 0.40 (seeds 0 / 1); ema_grpo last 0.50 / 0.50 -> gains 0.20 / 0.10 (mean 0.15,
    std 0.0707, half-width t(0.975, 1) = 12.706205 × 0.0707 / √2 = 0.635); grpo 0.35 / 0.40 -> 0.05 / 0.0."""
    configs = write_configs(tmp_path)
    start = {0: 0.3, 1: 0.4}
    last = {"grpo": {0: 0.35, 1: 0.4}, "ema_grpo": {0: 0.5, 1: 0.5}}
    envs, commands = [], []

    def fake_run(cmd, stdout, stderr, env, check):
        args = cmd[3:]
        commands.append(args[0])
        envs.append(env.get("OMP_NUM_THREADS"))
        seed = int(flag(args, "--model.init_args.seed"))
        run_dir = Path(flag(args, "--trainer.default_root_dir"))
        if args[0] == "validate":
            assert "--trainer.limit_val_batches=1.0" in args and "--trainer.callbacks=[]" in args
            columns = {"val/reward/overall/math": [(0, start[seed])]}
        else:
            adv = flag(args, "--model.init_args.advantage")
            columns = {
                "train/reward/overall/math": [(1, 0.1), (8, 0.2)],
                "val/reward/overall/math": [(4, 0.0), (8, last[adv][seed])],
            }
        write_metrics(run_dir / "csv" / "version_0" / "metrics.csv", columns)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(ablate.subprocess, "run", fake_run)
    out = tmp_path / "abl"
    result = run_ablation(
        [str(c) for c in configs],
        ["grpo", "ema_grpo"],
        2,
        str(out),
        parallel=2,
        threads=1,
        evaluate_start=True,
        heldout_at=[4],
    )
    assert sorted(commands) == ["fit"] * 4 + ["validate"] * 2 and set(envs) == {"1"}
    assert result["failed"] == [] and {r["advantage"] for r in result["runs"]} == {"grpo", "ema_grpo"}
    assert (out / START / "seed1" / "DONE").exists()
    from experiments.ablate_outcomes import outcome_summary

    runs = {(a, s): out / a / f"seed{s}" for a in last for s in (0, 1)}
    summary = outcome_summary(
        runs, "val/reward/overall", start_runs={s: out / START / f"seed{s}" for s in (0, 1)}
    )
    gain = summary["math"]["ema_grpo"]["gain"]
    half = 12.706205 * (0.1 / 2**0.5) / 2**0.5
    assert gain["mean"] == pytest.approx(0.15) and gain["lo"] == pytest.approx(0.15 - half, abs=1e-5)
    assert summary["math"]["grpo"]["gain"]["mean"] == pytest.approx(0.025)
    assert summary["math"][START]["mean"] == pytest.approx(0.35) and summary["math"][START]["gain"] is None
    at_4 = outcome_summary(
        runs, "val/reward/overall", start_runs={s: out / START / f"seed{s}" for s in (0, 1)}, at_step=4
    )
    assert at_4["math"]["ema_grpo"]["gain"]["mean"] == pytest.approx(-0.35)  # 0.0 at step 4, start 0.35
    text = (out / "ablation_heldout.md").read_text()
    assert "| math | 0.350 [" in text and "gain ema_grpo" in text and "logged at step 4 or before" in text
    assert (out / "ablation_heldout_greedy.png").stat().st_size > 0
    with pytest.raises(ValueError, match="parallel"):
        run_ablation([str(c) for c in configs], ["grpo"], 1, str(out), parallel=0)


def test_heldout_curves_start_from_the_starting_model(tmp_path):
    from experiments.ablate_outcomes import heldout_curves

    run, begin = tmp_path / "grpo" / "seed0", tmp_path / START / "seed0"
    write_metrics(
        run / "csv" / "version_0" / "metrics.csv", {"val/reward/overall/math": [(8, 0.6), (16, 0.7)]}
    )
    write_metrics(begin / "csv" / "version_0" / "metrics.csv", {"val/reward/overall/math": [(0, 0.2)]})
    curves = heldout_curves({("grpo", 0): run}, "val/reward/overall", {0: begin})
    steps, values = curves["grpo"]["math"][0]
    assert steps.tolist() == [0, 8, 16] and values.tolist() == [0.2, 0.6, 0.7]


def test_cli_ablate_subcommand(monkeypatch, tmp_path, capsys):
    from experiments import cli

    seen = {}

    def fake(configs, advantages, seeds, out, extra_args=(), **kw):
        seen.update(configs=configs, advantages=advantages, seeds=seeds, out=out, extra=extra_args, **kw)
        table = tmp_path / "ablation_table.md"
        table.write_text("| task |\n")
        return {"plot": str(tmp_path / "p.png"), "table": str(table), "failed": []}

    monkeypatch.setattr(ablate, "run_ablation", fake)
    rc = cli.main(
        [
            "ablate",
            "--configs",
            "[a.yaml, b.yaml]",
            "--advantages",
            "[grpo, ema_grpo]",
            "--seeds",
            "2",
            "--out",
            "o",
            "--last_k",
            "3",
            "--parallel",
            "2",
            "--threads",
            "1",
            "--evaluate_start",
            "true",
            "--heldout_at",
            "7",
            "--",
            "--trainer.max_steps=5",
            "--data.batch_size",
            "2",
        ]
    )
    assert rc == 0
    assert seen["configs"] == ["a.yaml", "b.yaml"] and seen["advantages"] == ["grpo", "ema_grpo"]
    assert seen["seeds"] == [0, 1] and seen["out"] == "o" and seen["last_k"] == 3
    assert seen["parallel"] == 2 and seen["threads"] == 1 and seen["evaluate_start"] is True
    assert seen["heldout_at"] == [7] and seen["skip_done"] is False
    assert seen["extra"] == ["--trainer.max_steps=5", "--data.batch_size", "2"]
    assert cli.main(["ablate", "--configs", "[a.yaml]", "--seeds", "0", "--out", "o"]) == 2
    assert "need at least one seed" in capsys.readouterr().err
    cli.main(
        ["ablate", "--configs+", "a.yaml", "--advantages", "ema_grpo", "--seeds", "[3, 7]", "--out", "o"]
    )
    assert seen["configs"] == ["a.yaml"] and seen["seeds"] == [3, 7] and seen["advantages"] == ["ema_grpo"]
    assert seen["extra"] == []
    assert cli.main(["ablate", "--out", "o"]) == 2
    assert "--configs is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not an estimator: jsonargparse names the flag and the choices
        cli.main(["ablate", "--configs", "[a.yaml]", "--advantages", "ppo", "--out", "o"])
    assert "advantages" in capsys.readouterr().err


def test_fit_args_parse_in_lightning_cli(tmp_path, capsys, monkeypatch):
    """The generated overrides are accepted by the real LightningCLI and replace the configs' loggers."""
    from experiments.lightning_cli import run_lightning_cli

    monkeypatch.setattr("sys.argv", ["onethinker"])

    configs = write_configs(tmp_path)
    trainer = configured_trainer(configs, ["--trainer.max_steps=3"])
    run_dir = tmp_path / "out" / "grpo" / "seed4"
    args = build_fit_args(
        configs,
        "grpo",
        4,
        run_dir,
        "abl",
        ["--trainer.max_steps=3"],
        configured_wandb(trainer),
        trainer["callbacks"],
    )
    with pytest.raises(SystemExit):
        run_lightning_cli([args[0], "--print_config", *args[1:]])
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 4 and printed["trainer"]["max_steps"] == 3
    assert printed["model"]["init_args"]["advantage"] == "grpo" and printed["model"]["init_args"]["seed"] == 4
    assert printed["data"]["seed"] == 4
    loggers = printed["trainer"]["logger"]
    assert [lg["class_path"].split(".")[-1] for lg in loggers] == ["CSVLogger", "WandbLogger"]
    assert loggers[1]["init_args"]["group"] == "abl" and loggers[1]["init_args"]["name"] == "grpo-seed4"
    callbacks = printed["trainer"]["callbacks"]
    assert callbacks[-1]["init_args"]["dirpath"] == str(run_dir / "checkpoints")

    start_dir = tmp_path / "out" / "start" / "seed4"
    args = build_validate_args(configs, 4, start_dir, ["--trainer.max_steps=3"])
    with pytest.raises(SystemExit):
        run_lightning_cli([args[0], "--print_config", *args[1:]])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["seed"] == 4 and printed["trainer"]["limit_val_batches"] == 1.0
    assert not printed["trainer"]["callbacks"]
    assert printed["trainer"]["logger"][0]["init_args"]["save_dir"] == str(start_dir)


DEMO = Path("experiments/demo/ema_grpo.yaml")
DEMO_INPUTS = (Path("outputs/demo/sft_hf"), Path("outputs/demo/synthetic/rl.json"))


@pytest.mark.slow
@pytest.mark.skipif(
    not DEMO.exists() or not all(p.exists() for p in DEMO_INPUTS),
    reason="needs experiments/demo/ema_grpo.yaml, the demo SFT export and the synthetic suite",
)
def test_smoke_tiny_ablation(tmp_path):
    """Two estimators × one seed, two RL steps each, on the demo recipe."""
    result = run_ablation(
        ["experiments/shared/trainer_cpu.yaml", str(DEMO)],
        ["grpo", "ema_grpo"],
        1,
        str(tmp_path / "abl"),
        [
            "--trainer.max_steps=2",
            "--trainer.log_every_n_steps=1",
            "--model.init_args.rollout.init_args.max_new_tokens=16",
        ],
        last_k=1,
    )
    assert result["failed"] == [], [
        Path(r["log"]).read_text()[-3000:] for r in result["runs"] if r["returncode"]
    ]
    assert Path(result["plot"]).exists()
    assert {"grpo", "ema_grpo"} <= set(result["final"]["all"])


def test_heldout_outcomes_hand_computed(tmp_path):
    """Last held-out value per run; mean and 95% t-interval over 3 seeds; paired difference to EMA-GRPO.
    ema_grpo finals 0.5, 0.6, 0.7: mean 0.6, std 0.1, half-width t(0.975, 2) = 4.302653 × 0.1 / √3.
    grpo finals 0.4, 0.45, 0.65: paired differences −0.1, −0.15, −0.05, mean −0.1, std 0.05."""
    from experiments.ablate_outcomes import outcome_summary, write_outcomes

    finals = {"ema_grpo": [0.5, 0.6, 0.7], "grpo": [0.4, 0.45, 0.65]}
    runs = {}
    for adv, values in finals.items():
        for seed, value in enumerate(values):
            run = tmp_path / adv / f"seed{seed}"
            columns = {
                "val/reward/overall/math": [(4, 0.0), (8, value)],
                "train/reward/overall/math": [(1, 0.3)],
            }
            write_metrics(run / "csv" / "version_0" / "metrics.csv", columns)
            runs[(adv, seed)] = run
    summary = outcome_summary(runs, "val/reward/overall")
    ema, grpo = summary["math"]["ema_grpo"], summary["math"]["grpo"]
    half = 4.302653 * 0.1 / 3**0.5
    assert ema["mean"] == pytest.approx(0.6) and (ema["lo"], ema["hi"]) == (
        pytest.approx(0.6 - half),
        pytest.approx(0.6 + half),
    )
    assert ema["paired"] is None and ema["n"] == 3
    paired = grpo["paired"]
    assert paired["mean"] == pytest.approx(-0.1) and paired["hi"] == pytest.approx(
        -0.1 + 4.302653 * 0.05 / 3**0.5
    )
    path = write_outcomes(runs, tmp_path, ["grpo", "ema_grpo"])
    text = Path(path).read_text()
    assert "| math | 0.500 [" in text and "Δ grpo" in text and "val/sampled_reward" not in text
