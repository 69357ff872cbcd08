"""``onethinker ablate``: the advantage-estimator ablation (EMA-GRPO vs GRPO vs Dr.GRPO) over seeds.

Each advantage × seed is one ``onethinker fit`` run in its own subprocess (no state leaks between runs),
logging to ``<out>/<advantage>/seed<seed>``: a CSVLogger always, and the configs' WandbLogger (if any)
regrouped under the ablation's name; a ModelCheckpoint with a fixed ``dirpath`` is moved there too. Afterwards the CSV logs are read back into per-task reward curves,
drawn to ``<out>/ablation_rewards.png`` and summarised in ``<out>/ablation_table.md``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from experiments.compose import compose, logger_entries, redirect_checkpoints, short_class

METRIC = "train/reward/overall"
ALL_TASKS = "all"  # the curve of `METRIC` itself (every task pooled)
WANDB_CLASS = "lightning.pytorch.loggers.WandbLogger"
CSV_CLASS = "lightning.pytorch.loggers.CSVLogger"
START = "start"  # runs that evaluate the starting model (``<out>/start/seed<seed>``)

# curves[advantage][task][seed] = (steps, values), both sorted by step
Curves = dict[str, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def seed_list(seeds: Sequence[int] | int) -> list[int]:
    """An int ``N`` means seeds ``0..N-1``; a sequence is taken as is."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"ablate: need at least one seed, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"ablate: seeds must be distinct and non-empty, got {out}")
    return out


def configured_trainer(configs: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``trainer`` section the configs and overrides give, merged by the LightningCLI parser."""
    return compose(configs, overrides)["trainer"]


def configured_wandb(trainer: dict[str, Any]) -> dict[str, Any] | None:
    """``init_args`` of the composed trainer's WandbLogger, or ``None`` when it has none."""
    for entry in logger_entries(trainer):
        if short_class(entry) == "WandbLogger":
            return dict(entry.get("init_args") or {})
    return None


def run_callbacks(callbacks: list[dict[str, Any]] | None, run_dir: str | Path) -> list[dict[str, Any]] | None:
    """The callbacks with every ModelCheckpoint's fixed ``dirpath`` moved to ``<run_dir>/checkpoints``, or
    ``None`` when nothing needs moving (runs would otherwise overwrite each other's checkpoints)."""
    return redirect_checkpoints(callbacks, Path(run_dir) / "checkpoints")


def run_loggers(
    run_dir: str | Path, advantage: str, seed: int, group: str, wandb_args: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The ``trainer.logger`` list of one run: CSV under ``run_dir``, plus W&B when configured."""
    run_dir = str(run_dir)
    loggers: list[dict[str, Any]] = [
        {"class_path": CSV_CLASS, "init_args": {"save_dir": run_dir, "name": "csv", "version": 0}}
    ]
    if wandb_args is not None:
        args = dict(wandb_args)
        tags = [t for t in args.get("tags") or [] if t not in ("ablation", advantage)]
        args.update(
            group=group,
            name=f"{advantage}-seed{seed}",
            save_dir=run_dir,
            offline=os.environ.get("WANDB_MODE", "offline") != "online",
            tags=[*tags, "ablation", advantage],
        )
        args.pop("id", None)
        args.pop("version", None)
        loggers.append({"class_path": WANDB_CLASS, "init_args": args})
    return loggers


def build_fit_args(
    configs: Sequence[str | Path],
    advantage: str,
    seed: int,
    run_dir: str | Path,
    group: str,
    extra_args: Sequence[str] = (),
    wandb_args: dict[str, Any] | None = None,
    callbacks: list[dict[str, Any]] | None = None,
) -> list[str]:
    """``onethinker fit`` arguments of one run (the extra overrides come before the ablation's own).

    ``wandb_args`` / ``callbacks``: what the composed configs set (`configured_wandb`, ``trainer.callbacks``).
    """
    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    args += list(extra_args)
    loggers = run_loggers(run_dir, advantage, seed, group, wandb_args)
    args += [f"--model.init_args.advantage={advantage}", *_run_placement(seed, run_dir, loggers)]
    moved = run_callbacks(callbacks, run_dir)
    if moved is not None and not any(a.startswith("--trainer.callbacks") for a in extra_args):
        args.append(f"--trainer.callbacks={json.dumps(moved)}")
    return args


def build_validate_args(
    configs: Sequence[str | Path], seed: int, run_dir: str | Path, extra_args: Sequence[str] = ()
) -> list[str]:
    """``onethinker validate`` arguments that evaluate the recipe's starting model on its held-out
    manifest with the sampling seed the fit of ``seed`` uses, logging to a CSV under ``run_dir``."""
    args = ["validate"]
    for c in configs:
        args += ["--config", str(c)]
    loggers = run_loggers(run_dir, START, seed, "", None)  # CSV only
    return [
        *args,
        *extra_args,
        *_run_placement(seed, run_dir, loggers),
        "--trainer.callbacks=[]",
        "--trainer.limit_val_batches=1.0",
    ]


def _run_placement(seed: int, run_dir: str | Path, loggers: list[dict[str, Any]]) -> list[str]:
    """The seeds, folder and loggers of one run, as the last overrides of its command line."""
    return [
        f"--seed_everything={seed}",
        f"--model.init_args.seed={seed}",
        # Lightning refuses to log a module and a data module whose shared ``seed`` hparams differ
        f"--data.seed={seed}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger={json.dumps(loggers)}",
    ]


def _run_job(
    advantage: str, seed: int, run_dir: Path, args: list[str], *, env: dict[str, str], skip_done: bool
) -> dict[str, Any]:
    """One ``onethinker`` subprocess logging to ``run_dir/fit.log``; ``DONE`` marks a finished run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log, done = run_dir / "fit.log", run_dir / "DONE"
    record = {"advantage": advantage, "seed": seed, "dir": str(run_dir), "log": str(log)}
    if skip_done and done.exists():
        print(f"[ablate] {advantage} seed {seed}: already done, skipped", flush=True)
        return {**record, "returncode": 0, "seconds": 0.0}
    done.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "experiments.cli", *args]
    (run_dir / "command.json").write_text(json.dumps(cmd, indent=1))
    print(f"[ablate] {advantage} seed {seed}: running (log: {log})", flush=True)
    started = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False).returncode
    seconds = time.perf_counter() - started
    if rc == 0:
        done.write_text("ok\n")
        print(f"[ablate] {advantage} seed {seed}: done in {seconds:.0f}s", flush=True)
    else:
        print(
            f"[ablate] {advantage} seed {seed}: FAILED (exit {rc}); last lines of {log}:\n{_tail(log)}",
            flush=True,
        )
    return {**record, "returncode": rc, "seconds": seconds}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_ablation(
    configs: list[str],
    advantages: list[str],
    seeds: list[int] | int,
    out: str,
    extra_args: list[str] = [],  # noqa: B006 (read only)
    *,
    name: str | None = None,
    last_k: int = 5,
    skip_done: bool = False,
    parallel: int = 1,
    threads: int | None = None,
    evaluate_start: bool = False,
    heldout_at: Sequence[int] = (),
) -> dict[str, Any]:
    """Run ``onethinker fit`` for every advantage × seed, then plot and tabulate per-task rewards.

    The arguments are those of ``onethinker ablate`` (``experiments.commands.ablate``, where each is
    documented); ``extra_args`` are its ``overrides`` and ``seeds`` may also be a count ``N``.

    Returns:
        ``{"name", "out", "runs": [{advantage, seed, dir, returncode, seconds, log}], "failed": [...],
        "final": {task: {advantage: {"mean", "std", "n"}}}, "plot", "table"}``.
    """
    if not configs:
        raise ValueError("ablate: at least one config is required (--configs)")
    if not advantages:
        raise ValueError("ablate: at least one advantage is required")
    seeds = seed_list(seeds)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or out_dir.resolve().name
    trainer = configured_trainer(configs, extra_args)
    wandb_args, callbacks = configured_wandb(trainer), trainer.get("callbacks")
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    if threads is not None:  # one intra-op pool per run: parallel runs must not oversubscribe the cores
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if parallel < 1:
        raise ValueError(f"ablate: parallel must be >= 1, got {parallel}")

    jobs: list[tuple[str, int, Path, list[str]]] = []
    if evaluate_start:  # the starting model on the held-out manifest, once per seed (its sampling seed)
        for seed in seeds:
            run_dir = out_dir / START / f"seed{seed}"
            jobs.append((START, seed, run_dir, build_validate_args(configs, seed, run_dir, extra_args)))
    for advantage in advantages:
        for seed in seeds:
            run_dir = out_dir / advantage / f"seed{seed}"
            args = build_fit_args(configs, advantage, seed, run_dir, name, extra_args, wandb_args, callbacks)
            jobs.append((advantage, seed, run_dir, args))
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        finished = list(pool.map(lambda job: _run_job(*job, env=env, skip_done=skip_done), jobs))
    runs = [r for r in finished if r["advantage"] != START]
    starts = {r["seed"]: Path(r["dir"]) for r in finished if r["advantage"] == START and r["returncode"] == 0}

    ok = {(r["advantage"], r["seed"]): Path(r["dir"]) for r in runs if r["returncode"] == 0}
    summary = summarize(
        ok,
        out_dir,
        name=name,
        last_k=last_k,
        advantages=advantages,
        seeds=seeds,
        start_runs=starts,
        heldout_at=heldout_at,
    )
    failed = [f"{r['advantage']}/seed{r['seed']}" for r in finished if r["returncode"] != 0]
    counterfactual = None
    if len(ok) == len(runs):  # every estimator on the same recorded rollouts (needs RewardRecordCallback)
        from experiments.counterfactual import CounterfactualError, run_counterfactual

        try:
            counterfactual = run_counterfactual(out_dir, list(advantages), seeds, name)
        except CounterfactualError as err:
            warnings.warn(str(err), stacklevel=2)
    return {
        "name": name,
        "out": str(out_dir),
        "runs": runs,
        "failed": failed,
        "counterfactual": counterfactual,
        **summary,
    }


# --------------------------------------------------------------------------------------------
# Reading the logs
# --------------------------------------------------------------------------------------------
def find_metrics_csv(run_dir: str | Path) -> Path | None:
    """The newest ``metrics.csv`` under a run folder."""
    found = sorted(Path(run_dir).rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_task_curves(csv_path: str | Path, metric: str = METRIC) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (steps, values)}`` from a CSVLogger file: ``<metric>/<task>`` columns, plus ``<metric>``
    itself as task ``all``. Empty cells are skipped; a step logged twice keeps its last value."""
    points: dict[str, dict[int, float]] = defaultdict(dict)
    prefix = metric + "/"
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for column, cell in row.items():
                if cell in (None, ""):
                    continue
                if column == metric:
                    task = ALL_TASKS
                elif column and column.startswith(prefix):
                    task = column[len(prefix) :]
                else:
                    continue
                value = float(cell)
                if math.isfinite(value):
                    points[task][int(float(step))] = value
    out = {}
    for task, by_step in points.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[task] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


def collect_curves(run_dirs: dict[tuple[str, int], Path], metric: str = METRIC) -> Curves:
    """Per-task reward curves of every run (runs without a metrics.csv are skipped with a warning)."""
    curves: Curves = defaultdict(lambda: defaultdict(dict))
    for (advantage, seed), run_dir in sorted(run_dirs.items()):
        path = find_metrics_csv(run_dir)
        if path is None:
            warnings.warn(f"ablate: no metrics.csv under {run_dir}", stacklevel=2)
            continue
        for task, series in read_task_curves(path, metric).items():
            curves[advantage][task][seed] = series
    return {a: dict(t) for a, t in curves.items()}


def _task_order(tasks: set[str]) -> list[str]:
    return sorted(t for t in tasks if t != ALL_TASKS) + ([ALL_TASKS] if ALL_TASKS in tasks else [])


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def final_rewards(curves: Curves, last_k: int = 5) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {advantage: {"mean", "std", "n"}}}``: per run, the mean of its last ``last_k`` logged
    values; then mean and sample std (ddof=1; 0 for one seed) over the seeds."""
    if last_k < 1:
        raise ValueError("ablate: last_k must be >= 1")
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for advantage, tasks in curves.items():
        for task, by_seed in tasks.items():
            finals = np.array([values[-last_k:].mean() for _, values in by_seed.values() if len(values)])
            if not len(finals):
                continue
            std = float(finals.std(ddof=1)) if len(finals) > 1 else 0.0
            table[task][advantage] = {"mean": float(finals.mean()), "std": std, "n": len(finals)}
    return dict(table)


def markdown_table(
    final: dict[str, dict[str, dict[str, float]]],
    advantages: Sequence[str],
    last_k: int,
    name: str = "",
    n_seeds: int | None = None,
) -> str:
    """The final-reward table in markdown; the best mean of each task is bold (unless tied)."""
    lines = [
        f"# Ablation{f' `{name}`' if name else ''}: final per-task reward",
        "",
        f"Mean ± std over seeds of each run's mean `{METRIC}/<task>` over its last {last_k} logged steps"
        f" (`{ALL_TASKS}`: every task pooled).",
        "",
        "| task | " + " | ".join(advantages) + " |",
        "|---|" + "---:|" * len(advantages),
    ]
    for task in _task_order(set(final)):
        cells = final[task]
        means = [cells[a]["mean"] for a in advantages if a in cells]
        best = max(means) if len(means) > 1 and means.count(max(means)) == 1 else None  # no bold on ties
        row = []
        for a in advantages:
            if a not in cells:
                row.append("—")
                continue
            c = cells[a]
            text = f"{c['mean']:.3f} ± {c['std']:.3f}"
            if n_seeds is not None and c["n"] < n_seeds:
                text += f" (n={c['n']})"
            row.append(f"**{text}**" if c["mean"] == best else text)
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def seed_band(
    by_seed: dict[int, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds on the union of their steps. Seeds are linearly interpolated
    between their own logged steps (a task is logged only on steps where it survived filtering) and
    left out outside their range."""
    steps = np.unique(np.concatenate([s for s, _ in by_seed.values()]))
    grid = np.full((len(by_seed), len(steps)), np.nan)
    for i, (s, v) in enumerate(by_seed.values()):
        inside = (steps >= s[0]) & (steps <= s[-1])
        grid[i, inside] = np.interp(steps[inside], s, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return steps, np.nanmean(grid, axis=0), np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)


def plot_curves(
    curves: Curves, path: str | Path, advantages: Sequence[str] | None = None, title: str = ""
) -> Path:
    """One subplot per task; per advantage, the mean over seeds with a shaded min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    advantages = list(advantages or sorted(curves))
    tasks = _task_order({t for a in curves.values() for t in a})
    if not tasks:
        raise ValueError("ablate: no reward curves to plot")
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes.flat, tasks):
        for i, advantage in enumerate(advantages):
            by_seed = curves.get(advantage, {}).get(task)
            if not by_seed:
                continue
            steps, mean, lo, hi = seed_band(by_seed)
            color = colors[i % len(colors)]
            label = f"{advantage} (n={len(by_seed)})"
            ax.plot(
                steps, mean, color=color, label=label, marker="o" if len(steps) <= 30 else None, ms=3, lw=1.5
            )
            if len(by_seed) > 1:
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("reward (overall)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.97) if title else (0, 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summarize(
    run_dirs: dict[tuple[str, int], Path],
    out: str | Path,
    name: str = "",
    last_k: int = 5,
    advantages: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    start_runs: dict[int, Path] | None = None,
    heldout_at: Sequence[int] = (),
) -> dict[str, Any]:
    """Read the runs' CSVs, write ``ablation_rewards.png`` and ``ablation_table.md`` under ``out``, and the
    held-out outcomes (``ablation_heldout.md``, gains over ``start_runs`` ``{seed: run folder}``)."""
    out = Path(out)
    curves = collect_curves(run_dirs)
    advantages = list(advantages or sorted(curves))
    final = final_rewards(curves, last_k)
    table = out / "ablation_table.md"
    table.write_text(
        markdown_table(final, advantages, last_k, name, len(seeds) if seeds is not None else None)
    )
    plot = None
    if curves:
        plot = str(
            plot_curves(
                curves,
                out / "ablation_rewards.png",
                advantages,
                title=f"{name}: {METRIC} per task, mean over seeds (band: min–max)",
            )
        )
    else:
        warnings.warn("ablate: no run produced reward curves; no plot written", stacklevel=2)
    (out / "ablation_final.json").write_text(json.dumps(final, indent=1))
    from experiments.ablate_outcomes import write_outcomes

    heldout = write_outcomes(run_dirs, out, advantages, start_runs or {}, heldout_at)
    return {"final": final, "plot": plot, "table": str(table), "heldout": heldout}
