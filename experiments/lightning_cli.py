"""LightningCLI for ``onethinker fit|validate|test|predict``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from datamodules.datamodule import OneThinkerDataModule


class OutputDirError(OSError):
    """A folder the run will write (checkpoints, logs) that cannot be written."""


def output_dirs(trainer: Any) -> list[str]:
    """The folders a fit writes, from the parsed ``trainer`` config: its root, every checkpoint
    callback's ``dirpath`` and every logger's ``save_dir``."""
    dirs = [trainer.get("default_root_dir") or "."]
    for entry in [*(trainer.get("callbacks") or []), *(_as_list(trainer.get("logger")))]:
        init = entry.get("init_args", {}) if hasattr(entry, "get") else {}
        dirs += [str(init[key]) for key in ("dirpath", "save_dir") if init.get(key)]
    return list(dict.fromkeys(str(d) for d in dirs))


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def check_writable(dirs: Sequence[str]) -> None:
    """Create each folder and write a file in it, so a run fails at set-up, not at its first save."""
    import tempfile

    for path in dirs:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".onethinker-write-check-"):
                pass
        except OSError as err:
            raise OutputDirError(
                f"cannot write to {path} ({err.strerror or err}); the run would fail at its first save"
            ) from None


class OneThinkerCLI(LightningCLI):
    """Checks the output folders before anything is built; connects the backbone's processor to
    the data module once both exist."""

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            config = self.config.get(self.subcommand, self.config)
            check_writable(output_dirs(config.get("trainer", {})))

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        backbone = getattr(self.model, "backbone", None)
        if backbone is not None and isinstance(self.datamodule, OneThinkerDataModule):
            self.datamodule.connect(backbone.processor)


def run_lightning_cli(argv: Sequence[str]) -> OneThinkerCLI:
    return OneThinkerCLI(
        datamodule_class=OneThinkerDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=list(argv),
    )


def config_error(argv: Sequence[str]) -> str | None:
    """The first ``--config`` file that is missing or not valid YAML, named (jsonargparse's own
    message does not say which file), or None."""
    import yaml

    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in paths:
        file = Path(path)
        if not file.is_file():
            if file.suffix in (".yaml", ".yml"):
                return f"--config {path}: no such file"
            continue  # an inline YAML string, which jsonargparse also takes
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            return f"--config {path}: not valid YAML ({' '.join(str(err).split())})"
        if data is not None and not isinstance(data, dict):
            return f"--config {path}: expected a mapping of settings, got a {type(data).__name__}"
    return None
