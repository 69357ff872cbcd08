"""Every command in the README's bash blocks stays valid.

- ``onethinker fit|validate|test`` (also under ``torchrun -m experiments.cli``): the whole command
  line, configs and overrides, parses with ``--print_config``. GPU recipes and real-data paths parse
  without a GPU or the data (nothing is instantiated), so none is left out.
- other ``onethinker`` subcommands (synth, data check, export, ablate, demo): the command line parses
  with their typed jsonargparse parser (flags, values and types), without running anything.
- ``bash scripts/…``: the script exists and ``bash -n`` accepts it.
The demo runs end to end by ``scripts/demo.sh``; tests/test_demo.py checks its stages and the
config it composes.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from tests.test_experiments import ROOT, onethinker

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")


def readme_commands() -> list[list[str]]:
    """The README's bash blocks as argument lists: continuations joined, comments and ``...`` dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word != "&&":
                    args += [word] if word != "..." else []
                    continue
                if args and args[0] not in (".",):
                    commands.append(args)
                args = []
    return commands


def onethinker_args(command: list[str]) -> list[str] | None:
    """The arguments after ``onethinker`` (or ``torchrun … -m experiments.cli``); None for other tools."""
    if command[0] == "onethinker":
        return command[1:]
    if command[0] == "torchrun" and "experiments.cli" in command:
        return command[command.index("experiments.cli") + 1 :]
    return None


COMMANDS = readme_commands()
CLI = [args for args in map(onethinker_args, COMMANDS) if args is not None]
LIGHTNING = [args for args in CLI if args[0] in LIGHTNING_SUBCOMMANDS]
OTHER = [args for args in CLI if args[0] not in LIGHTNING_SUBCOMMANDS]
SCRIPTS = [c for c in COMMANDS if c[0] == "bash" and len(c) > 1 and c[1].startswith("scripts/")]


def test_the_readme_has_the_commands_this_file_checks():
    assert len(LIGHTNING) >= 8 and len(OTHER) >= 5 and len(SCRIPTS) >= 3
    assert all(onethinker_args(c) is not None or c[0] == "bash" for c in COMMANDS), [
        c for c in COMMANDS if onethinker_args(c) is None and c[0] != "bash"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("args", LIGHTNING, ids=lambda a: " ".join(a)[-80:])
def test_lightning_commands_parse(args: list[str]):
    result = onethinker(*args, "--print_config", cwd=ROOT, timeout=180)
    assert result.returncode == 0, f"onethinker {' '.join(args)}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("args", OTHER, ids=lambda a: " ".join(a)[:80])
def test_other_subcommands_parse(args: list[str]):
    """The typed parser of ``onethinker`` takes the whole command line: flags, values and their types."""
    from experiments.cli import build_parser, with_passthrough

    try:
        parsed = build_parser().parse_args(with_passthrough(args))
    except SystemExit:
        pytest.fail(f"onethinker {' '.join(args)} does not parse")
    assert parsed.subcommand == args[0]


def test_a_wrong_flag_or_value_does_not_parse():
    from experiments.cli import build_parser

    for args in (["synth", "--out", "o", "--per-task", "4"], ["ablate", "--out", "o", "--seeds", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(args)


@pytest.mark.parametrize("command", SCRIPTS, ids=lambda c: " ".join(c))
def test_scripts_exist_and_parse(command: list[str]):
    script = ROOT / command[1]
    assert script.is_file(), script
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    for flag in (w for w in command[2:] if w.startswith("--")):
        assert flag in script.read_text(), f"{script.name} does not handle {flag}"


def script_commands() -> list[list[str]]:
    """The ``onethinker`` subcommand lines of ``scripts/*.sh`` (not fit, which the README covers), with
    shell variables replaced by a placeholder and ``"$@"`` dropped."""
    commands = []
    for script in sorted((ROOT / "scripts").glob("*.sh")):
        text = script.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\$\{?\w+(:-[^}]*)?\}?", "VALUE", line.replace('"$@"', "")).strip()
            if line.startswith("onethinker ") and not line.startswith(("onethinker fit", "onethinker test")):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


SCRIPT_COMMANDS = script_commands()


def test_scripts_have_the_commands_this_file_checks():
    assert {c[0] for c in SCRIPT_COMMANDS} >= {"demo", "ablate"}


@pytest.mark.parametrize("args", SCRIPT_COMMANDS, ids=lambda a: " ".join(a)[:80])
def test_script_subcommands_parse(args: list[str]):
    test_other_subcommands_parse(args)
