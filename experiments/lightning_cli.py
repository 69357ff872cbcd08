"""LightningCLI for ``onethinker fit|validate|test|predict``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from datamodules.datamodule import OneThinkerDataModule


class OneThinkerCLI(LightningCLI):
    """Connects the backbone's processor to the data module once both exist."""

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
