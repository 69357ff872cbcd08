"""LightningCLI for ``onethinker fit|validate|test|predict``."""

from __future__ import annotations

from collections.abc import Sequence

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
