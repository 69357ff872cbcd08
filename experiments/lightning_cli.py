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


def recipe_name(config_files: Sequence[Any]) -> str | None:
    """The name of the last ``--config`` file that sets ``model.class_path`` (the recipe): its stem,
    after its folder unless that is ``experiments`` (``ema_grpo_qwen3vl_8b``, ``demo-ema_grpo``)."""
    import yaml

    for path in reversed(list(config_files or [])):
        absolute = getattr(path, "absolute", str(path))  # jsonargparse's Path: the file as resolved
        file = Path(str(absolute() if callable(absolute) else absolute))
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "class_path" in model:
            folder = file.parent.name
            return file.stem if folder in ("experiments", "") else f"{folder}-{file.stem}"
    return None


def name_loggers(trainer: Any, recipe: str | None) -> None:
    """Loggers that leave their run name unset take the recipe's: W&B ``name``/``group``/``tags`` and
    the CSV folder ``name``, so every recipe's runs are told apart without copying names by hand."""
    if recipe is None:
        return
    for entry in _as_list(trainer.get("logger")):
        if not hasattr(entry, "get") or not entry.get("init_args"):
            continue
        kind, init = str(entry.get("class_path", "")).rsplit(".", 1)[-1], entry["init_args"]
        if kind == "WandbLogger":
            for key, value in (("name", recipe), ("group", recipe), ("tags", [recipe])):
                if not init.get(key):
                    init[key] = value
        elif kind == "CSVLogger" and init.get("name") in (None, "lightning_logs"):
            init["name"] = recipe


class OneThinkerCLI(LightningCLI):
    """Checks the output folders before anything is built; names unnamed loggers after the recipe;
    connects the backbone's processor to the data module once both exist."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        name_loggers(config.get("trainer", {}), recipe_name(config.get("config")))
        if self.subcommand == "fit":
            check_writable(output_dirs(config.get("trainer", {})))

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        backbone = getattr(self.model, "backbone", None)
        if backbone is not None and isinstance(self.datamodule, OneThinkerDataModule):
            self.datamodule.connect(backbone.processor)


def run_lightning_cli(argv: Sequence[str], cli_class: type[OneThinkerCLI] = OneThinkerCLI) -> OneThinkerCLI:
    import warnings

    with warnings.catch_warnings():  # main() always passes the arguments it read from sys.argv itself
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return cli_class(
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
