"""Compose a run's configuration with the LightningCLI parser itself (jsonargparse), without building
anything: the ``--config`` files in order, then the dotted overrides, exactly as ``onethinker fit``
would merge them. ``demo`` and ``ablate`` read the merged result instead of merging YAML by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from experiments.lightning_cli import OneThinkerCLI, run_lightning_cli


class _Composed(Exception):  # noqa: N818 (a signal carrying the result, not an error)
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config


class _ComposeOnly(OneThinkerCLI):
    """Parses and validates, then stops before any class is instantiated or any folder is touched."""

    def before_instantiate_classes(self) -> None:
        raise _Composed(
            yaml.safe_load(self.parser.dump(self.config, skip_check=True, skip_none=False))[self.subcommand]
        )


def compose(
    configs: Sequence[str | Path], overrides: Sequence[str] = (), command: str = "fit"
) -> dict[str, Any]:
    """The configuration ``onethinker <command> --config c1 ... <overrides>`` would run, as plain data."""
    args = [command]
    for path in configs:
        args += ["--config", str(path)]
    try:
        run_lightning_cli([*args, *overrides], cli_class=_ComposeOnly)
    except _Composed as done:
        return done.config
    raise RuntimeError("compose: the LightningCLI returned without parsing")  # unreachable by design


def logger_entries(trainer: dict[str, Any]) -> list[dict[str, Any]]:
    """``trainer.logger`` as a list of ``{class_path, init_args}`` (one entry, a list, or none)."""
    value = trainer.get("logger")
    entries = value if isinstance(value, list) else [value]
    return [entry for entry in entries if isinstance(entry, dict)]


def short_class(entry: dict[str, Any]) -> str:
    return str(entry.get("class_path", "")).rsplit(".", 1)[-1]


def redirect_checkpoints(
    callbacks: list[dict[str, Any]] | None, dirpath: str | Path
) -> list[dict[str, Any]] | None:
    """The callbacks with every ModelCheckpoint's fixed ``dirpath`` set to ``dirpath`` (copies; the
    input is left alone), or ``None`` when no callback has one to move."""
    moved, out = False, []
    for entry in callbacks or []:
        init = dict(entry.get("init_args") or {})
        if short_class(entry) == "ModelCheckpoint" and init.get("dirpath"):
            entry, moved = {**entry, "init_args": {**init, "dirpath": str(dirpath)}}, True
        out.append(entry)
    return out if moved else None
