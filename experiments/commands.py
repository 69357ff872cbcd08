"""The ``onethinker`` subcommands besides the LightningCLI ones, as typed functions: jsonargparse builds
their flags and ``--help`` from these signatures and docstrings (``experiments/cli.py``). Each returns
the process exit code (``demo`` is ``experiments.demo.run_demo`` itself)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from experiments.counterfactual import ESTIMATORS
from lightning_modules.rl.advantages import Estimator


def synth(*, out: str, per_task: int = 8, seed: int = 0, workers: int = 0) -> int:
    """Write the synthetic 10-task suite: media plus the RL, SFT and evaluation manifests.

    Args:
        out: output folder.
        per_task: samples per (problem_type, data_type).
        seed: the suite's seed (same seed, same files).
        workers: worker processes (0: in process).
    """
    from datamodules.synthetic import generate_suite

    for kind, path in generate_suite(out, per_task=per_task, seed=seed, workers=workers).items():
        print(f"{kind}: {path}")
    return 0


def data_check(
    manifests: str | list[str],
    media_root: str | None = None,
    kind: Literal["rl", "sft", "eval"] | None = None,
    decode: bool = True,
) -> int:
    """Validate manifests and their media without a model: counts, invalid records, bad media.

    Args:
        manifests: an RL, SFT or evaluation manifest (JSON list or JSONL), or a list of them
            (``'[a.json, b.json]'``).
        media_root: folder that relative media paths resolve against (default: the manifest's).
        kind: record kind (default: detected from the records).
        decode: decode every image and video; ``false`` only checks that the files exist.
    """
    from datamodules.check import check_manifest
    from datamodules.records import ManifestError, RecordError

    ok = True
    for manifest in [manifests] if isinstance(manifests, str) else manifests:
        try:
            report = check_manifest(manifest, kind, media_root, decode=decode)
        except (ManifestError, RecordError) as err:
            print(f"onethinker data check: {err}", file=sys.stderr)
            ok = False
            continue
        print(report.render())
        ok &= report.ok
    return 0 if ok else 1


def export(checkpoint: str, *, out: str) -> int:
    """Write a Hugging Face model folder from a training checkpoint.

    Args:
        checkpoint: a ``.ckpt`` file or a folder of shards written by ``onethinker fit``.
        out: output folder (weights, config, processor).
    """
    from experiments.export import export_checkpoint

    print(f"exported {checkpoint} -> {export_checkpoint(checkpoint, out)}")
    return 0


def ablate(
    *,
    out: str,
    configs: list[str] | None = None,
    advantages: Estimator | list[Estimator] = list(ESTIMATORS),  # noqa: B006,B008 (read only)
    seeds: int | list[int] = 3,
    name: str | None = None,
    last_k: int = 5,
    skip_done: bool = False,
    parallel: int = 1,
    threads: int | None = None,
    evaluate_start: bool = False,
    heldout_at: int | list[int] | None = None,
    counterfactual: bool = False,
    overrides: list[str] | None = None,
) -> int:
    """Run a GRPO recipe once per advantage estimator and seed; plot and tabulate per-task rewards.

    ``onethinker fit`` overrides for every run go after ``--``, e.g. ``-- --trainer.max_steps=20``.

    Args:
        out: output folder: one sub-folder per run, the plot and the tables.
        configs: the fit configs of one run, in order (``'[trainer.yaml, recipe.yaml]'``).
        advantages: one estimator or a list of them.
        seeds: a count N (seeds 0..N-1) or a list of seeds (``'[7]'`` for seed 7 alone).
        name: ablation name and W&B group (default: the ``out`` folder's name).
        last_k: a run's final reward is the mean of its last K logged steps.
        skip_done: keep runs that already finished.
        parallel: runs at a time, each its own process.
        threads: torch threads per run (at most cores / parallel).
        evaluate_start: evaluate the starting model on the held-out manifest once per seed, and report
            each estimator's gain over it.
        heldout_at: also tabulate the held-out outcomes at these logged steps (after RL step k: k-1).
        counterfactual: no fits: recompute every estimator on the recorded rewards of the runs in ``out``.
        overrides: ``onethinker fit`` overrides for every run (what follows ``--``).
    """
    from experiments.ablate import run_ablation, seed_list

    estimators = [advantages] if isinstance(advantages, str) else list(advantages)
    try:
        seeds = seed_list(seeds)
    except ValueError as err:
        print(f"onethinker ablate --seeds {seeds}: {err}", file=sys.stderr)
        return 2
    if counterfactual:
        from experiments.counterfactual import CounterfactualError, run_counterfactual

        try:
            result = run_counterfactual(out, estimators, seeds, name or "")
        except CounterfactualError as err:
            print(err, file=sys.stderr)
            return 2
        print(f"plot: {result['plot']}\ntable: {result['table']}")
        return 0
    if not configs:
        print("onethinker ablate: --configs is required (except with --counterfactual true)", file=sys.stderr)
        return 2
    at = [] if heldout_at is None else [heldout_at] if isinstance(heldout_at, int) else list(heldout_at)
    result = run_ablation(
        configs,
        estimators,
        seeds,
        out,
        list(overrides or []),
        name=name,
        last_k=last_k,
        skip_done=skip_done,
        parallel=parallel,
        threads=threads,
        evaluate_start=evaluate_start,
        heldout_at=at,
    )
    print(f"plot: {result['plot']}\ntable: {result['table']}")
    print(Path(result["table"]).read_text())
    if result["failed"]:
        print(f"failed runs: {', '.join(result['failed'])}")
        return 1
    return 0
