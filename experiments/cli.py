"""The ``onethinker`` command.

``fit``, ``validate``, ``test`` and ``predict`` go to a LightningCLI driven by the YAML recipes under
``experiments/``. ``synth`` writes the synthetic suite, ``data check`` validates a manifest and its
media, ``export`` turns a checkpoint into a Hugging Face folder, ``demo`` runs the Quickstart
demo and ``ablate`` runs the advantage-estimator ablation. The library never imports this module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser


def subcommands() -> dict[str, Any]:
    """The typed functions behind the subcommands (imported here: ``fit`` never needs them)."""
    from experiments import commands
    from experiments.demo import run_demo

    return {
        "synth": commands.synth,
        "data": {"check": commands.data_check},
        "demo": run_demo,
        "export": commands.export,
        "ablate": commands.ablate,
    }


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
    from datamodules.records import ManifestError, RecordError
    from experiments.export import CheckpointError

    parsed = build_parser().parse_args(with_passthrough(argv)).as_dict()
    node: Any = subcommands()
    while isinstance(node, dict):
        name = parsed["subcommand"]
        node, parsed = node[name], parsed[name]
    try:
        result = node(**parsed)
    except (ManifestError, RecordError, CheckpointError) as err:  # the user's file: one line, no traceback
        print(f"onethinker {argv[0] if argv else ''}: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def build_parser() -> ArgumentParser:
    """Flags, positionals and help of every subcommand, from the functions' signatures and docstrings:
    required positional parameters are positional, keyword-only ones are required flags."""
    parser = ArgumentParser(prog="onethinker", description=__doc__)
    add_subcommands(parser, subcommands())
    return parser


def add_subcommands(parser: ArgumentParser, tree: dict[str, Any]) -> None:
    subcommands = parser.add_subcommands(dest="subcommand")
    for name, node in tree.items():
        child = ArgumentParser(description=None if isinstance(node, dict) else node.__doc__.split("\n\n")[0])
        summary = f"{name} tools" if isinstance(node, dict) else node.__doc__.split("\n")[0]
        subcommands.add_subcommand(name, child, help=summary)
        if isinstance(node, dict):  # jsonargparse wants each level's parser attached before its children
            add_subcommands(child, node)
        else:
            child.add_function_arguments(node, as_positional=True, as_group=False)


def with_passthrough(argv: list[str]) -> list[str]:
    """``ablate ... -- <fit overrides>``: what follows ``--`` becomes ``--overrides``, so the overrides
    need no quoting of their own."""
    if argv[:1] != ["ablate"] or "--" not in argv:
        return argv
    cut = argv.index("--")
    return [*argv[:cut], f"--overrides={json.dumps(argv[cut + 1 :])}"]


if __name__ == "__main__":
    sys.exit(main())
