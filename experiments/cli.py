"""The ``onethinker`` command.

``fit``, ``validate``, ``test`` and ``predict`` go to a LightningCLI driven by the YAML recipes under
``experiments/``. ``synth`` writes the synthetic suite, ``data check`` validates a manifest and its
media, ``export`` turns a checkpoint into a Hugging Face folder, and ``demo`` runs the Quickstart
demo. The library never imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _synth(args: argparse.Namespace) -> int:
    from datamodules.synthetic import generate_suite

    paths = generate_suite(args.out, per_task=args.per_task, seed=args.seed, workers=args.workers)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from datamodules.check import check_manifest

    ok = True
    for manifest in args.manifests:
        report = check_manifest(manifest, args.kind, args.media_root, decode=not args.no_decode)
        print(report.render())
        ok &= report.ok
    return 0 if ok else 1


def _demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo

    run_demo(args.out, per_task=args.per_task, seed=args.seed, sft_steps=args.sft_steps)
    return 0


def _export(args: argparse.Namespace) -> int:
    from experiments.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} -> {out}")
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
    check.add_argument("--kind", choices=["rl", "sft", "eval"], default=None, help="record kind (default: detected)")
    check.add_argument("--no-decode", action="store_true", help="check that media exist, without decoding them")
    check.set_defaults(run=_data_check)

    demo = sub.add_parser("demo", help="the Quickstart demo on the synthetic suite")
    demo.add_argument("--out", default="outputs/demo")
    demo.add_argument("--per-task", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--sft-steps", type=int, default=None, help="override the demo SFT run's max_steps")
    demo.set_defaults(run=_demo)

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
        from experiments.lightning_cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
