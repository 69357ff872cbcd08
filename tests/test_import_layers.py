"""The import directions of docs/architecture.md: the library never imports `experiments`; `rewards`
and `metrics` import only themselves; inside `lightning_modules`, the folders never import the three
modules, and each folder imports only the folders its row allows."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("lightning_modules", "datamodules", "callbacks", "rewards", "metrics", "experiments")

LIBRARY = {"datamodules", "rewards", "metrics"}  # what any part of lightning_modules may use
ALLOWED = {
    "rewards": {"rewards"},
    "metrics": {"metrics"},
    "datamodules": {"datamodules"},
    "callbacks": {"callbacks", "datamodules", "rewards", "lightning_modules.rl"},
    "lightning_modules.model": LIBRARY | {"lightning_modules.model"},
    "lightning_modules.rl": LIBRARY | {"lightning_modules.rl", "lightning_modules.model"},
    "lightning_modules.eval": LIBRARY | {"lightning_modules.eval"},
    "lightning_modules.training": LIBRARY | {"lightning_modules.training", "lightning_modules.model"},
}
# A maintenance script, not library code: it retrains the demo BPE that model/processing.py ships.
EXCEPTIONS = {("datamodules/synthetic_corpus.py", "lightning_modules.model")}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "lightning_modules" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] if parts[0] != "lightning_modules" else module


def imported_layers(path: Path) -> set[str]:
    """Our layers a file imports, at any depth (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OURS:
                found.add(layer(name))
    # `from lightning_modules.rl import vllm_engine` names the folder and the module: keep the folder
    return {f for f in found if not any(g != f and f.startswith(g + ".") for g in found)}


def violations() -> list[str]:
    bad = []
    for owner, allowed in ALLOWED.items():
        for path in sorted((ROOT / owner.replace(".", "/")).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for used in imported_layers(path) - allowed:
                if (rel, used) not in EXCEPTIONS:
                    bad.append(f"{rel} imports {used}")
    for path in sorted((ROOT / "lightning_modules").glob("*.py")):  # the three modules: anything but the CLI
        if "experiments" in imported_layers(path):
            bad.append(f"{path.relative_to(ROOT).as_posix()} imports experiments")
    return bad


def test_import_directions() -> None:
    assert not violations()


def test_a_wrong_import_is_found(tmp_path: Path) -> None:
    file = tmp_path / "wrong.py"
    file.write_text(
        "def f():\n    from lightning_modules.grpo import GRPOModule\n    import experiments.cli\n"
    )
    assert imported_layers(file) == {"lightning_modules.grpo", "experiments"}
    file.write_text("from lightning_modules.rl import vllm_engine\nfrom rewards import score\n")
    assert imported_layers(file) == {"lightning_modules.rl", "rewards"}
