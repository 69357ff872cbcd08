"""The ``onethinker`` command.

``fit``, ``validate``, ``test`` and ``predict`` go to a LightningCLI driven by the YAML recipes under
``experiments/``. ``synth`` writes the synthetic suite, ``data check`` validates a manifest and its
media, ``export`` turns a checkpoint into a Hugging Face folder, ``demo`` runs the Quickstart
demo and ``ablate`` runs the advantage-estimator ablation. The library never imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from datamodules.synthetic import generate_suite

    paths = generate_suite(args.out, per_task=args.per_task, seed=args.seed, workers=args.workers)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from datamodules.check import check_manifest
    from datamodules.records import ManifestError, RecordError

    ok = True
    for manifest in args.manifests:
        try:
            report = check_manifest(manifest, args.kind, args.media_root, decode=not args.no_decode)
        except (ManifestError, RecordError) as err:
            print(f"onethinker data check: {err}", file=sys.stderr)
            ok = False
            continue
        print(report.render())
        ok &= report.ok
    return 0 if ok else 1


def _demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo

    run_demo(
        args.out,
        per_task=args.per_task,
        seed=args.seed,
        sft_steps=args.sft_steps,
        grpo_steps=args.grpo_steps,
        sft_threads=args.sft_threads,
        rl_threads=args.rl_threads,
        sft_only=args.sft_only,
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from experiments.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from experiments.ablate import run_ablation, seed_list

    advantages = [a.strip() for a in args.advantages.split(",") if a.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if "," in args.seeds else int(args.seeds)
        seed_list(seeds)
    except ValueError as err:
        print(f"onethinker ablate --seeds {args.seeds}: {err}", file=sys.stderr)
        return 2
    if args.counterfactual:
        from experiments.counterfactual import CounterfactualError, run_counterfactual

        try:
            result = run_counterfactual(args.out, advantages, seed_list(seeds), args.name or "")
        except CounterfactualError as err:
            print(err, file=sys.stderr)
            return 2
        print(f"plot: {result['plot']}\ntable: {result['table']}")
        return 0
    if not args.config:
        print("onethinker ablate: --config is required (except with --counterfactual)", file=sys.stderr)
        return 2
    result = run_ablation(
        args.config,
        advantages,
        seeds,
        args.out,
        list(args.overrides),
        name=args.name,
        last_k=args.last_k,
        skip_done=args.skip_done,
        parallel=args.parallel,
        threads=args.threads,
        evaluate_start=args.evaluate_start,
        heldout_at=args.heldout_at,
    )
    print(f"plot: {result['plot']}\ntable: {result['table']}")
    print(Path(result["table"]).read_text())
    if result["failed"]:
        print(f"failed runs: {', '.join(result['failed'])}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onethinker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the synthetic 10-task suite (media + RL/SFT/eval manifests)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--per-task", type=int, default=8, help="samples per (problem_type, data_type)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=0, help="worker processes (0: in process)")
    synth.set_defaults(run=_synth)

    data = sub.add_parser("data", help="data tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate manifests and their media without a model")
    check.add_argument("manifests", nargs="+", help="RL, SFT or evaluation manifests (JSON list or JSONL)")
    check.add_argument("--media-root", default=None, help="folder relative media paths resolve against")
    check.add_argument(
        "--kind", choices=["rl", "sft", "eval"], default=None, help="record kind (default: detected)"
    )
    check.add_argument(
        "--no-decode", action="store_true", help="check that media exist, without decoding them"
    )
    check.set_defaults(run=_data_check)

    demo = sub.add_parser("demo", help="the Quickstart demo on the synthetic suite")
    demo.add_argument("--out", default="outputs/demo")
    demo.add_argument("--per-task", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--sft-steps", type=int, default=None, help="override the demo SFT run's max_steps")
    demo.add_argument(
        "--grpo-steps",
        type=int,
        default=None,
        help="override the demo EMA-GRPO run's max_steps (updates, 4 per RL step)",
    )
    demo.add_argument("--sft-threads", type=int, default=2, help="torch threads in SFT")
    demo.add_argument(
        "--rl-threads", type=int, default=1, help="torch threads in evaluation and EMA-GRPO (generation)"
    )
    demo.add_argument(
        "--sft-only",
        action="store_true",
        help="stop after SFT and export (the start of `ablate` on the demo)",
    )
    demo.set_defaults(run=_demo)

    ablate = sub.add_parser(
        "ablate",
        help="run a GRPO recipe once per advantage estimator and seed; plot and tabulate per-task rewards",
        description="Extra `onethinker fit` overrides go after `--`, e.g. `-- --trainer.max_steps=20`.",
    )
    ablate.add_argument("--config", action="append", default=[], help="a fit config (repeat, in order)")
    ablate.add_argument("--advantages", default="grpo,dr_grpo,ema_grpo", help="comma-separated estimators")
    ablate.add_argument(
        "--seeds", default="3", help="a count N (seeds 0..N-1) or a comma-separated list (one seed: `7,`)"
    )
    ablate.add_argument("--out", required=True, help="output folder (one sub-folder per run, plot, table)")
    ablate.add_argument(
        "--name", default=None, help="ablation name / W&B group (default: the --out folder name)"
    )
    ablate.add_argument(
        "--last-k", type=int, default=5, help="final reward = mean of the last K logged steps"
    )
    ablate.add_argument("--skip-done", action="store_true", help="keep runs that already finished")
    ablate.add_argument("--parallel", type=int, default=1, help="runs at a time, each its own process")
    ablate.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (at most cores / --parallel)"
    )
    ablate.add_argument(
        "--evaluate-start",
        action="store_true",
        help="evaluate the starting model on the held-out manifest once per seed; report gains over it",
    )
    ablate.add_argument(
        "--heldout-at",
        type=int,
        action="append",
        default=[],
        help="also tabulate the held-out outcomes at this logged step (after RL step k: k-1); repeatable",
    )
    ablate.add_argument(
        "--counterfactual",
        action="store_true",
        help="no fits: recompute every estimator on the recorded rewards of the runs under --out",
    )
    ablate.add_argument("overrides", nargs="*", help="`onethinker fit` overrides for every run (after `--`)")
    ablate.set_defaults(run=_ablate)

    export = sub.add_parser("export", help="write a Hugging Face model folder from a training checkpoint")
    export.add_argument("checkpoint", help="a .ckpt written by onethinker fit")
    export.add_argument("--out", required=True, help="output folder (weights, config, processor)")
    export.set_defaults(run=_export)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see onethinker {name} --help)", add_help=False)
    return parser


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from experiments.lightning_cli import OutputDirError, config_error, run_lightning_cli

        problem = config_error(argv)
        if problem:
            print(f"onethinker {argv[0]}: {problem}", file=sys.stderr)
            return 2
        from datamodules.datamodule import SkippedDataError

        try:
            run_lightning_cli(argv)
        except OutputDirError as err:
            print(f"onethinker {argv[0]}: {err}", file=sys.stderr)
            return 2
        except SkippedDataError as err:  # the data, not the code: counts and first files, no traceback
            print(f"onethinker {argv[0]}: {err}", file=sys.stderr)
            return 1
        return 0
    args = build_parser().parse_args(argv)
    from datamodules.records import ManifestError, RecordError
    from experiments.export import CheckpointError

    try:
        return args.run(args)
    except (ManifestError, RecordError, CheckpointError) as err:  # the user's file: one line, no traceback
        print(f"onethinker {argv[0] if argv else ''}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
