"""The README's layout table ("What is here") matches the tree: every path it names exists, every
module of the packages is named (by its own row, or by its folder's row, which must name each of its
files), so the table cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lightning_modules", "datamodules", "experiments")


def layout_rows(readme: str) -> list[tuple[list[str], str]]:
    """(paths of the first cell, the rest of the row) for each row of the "What is here" table; a bare
    name after the first path (``a/b.py``, ``c.py``) is taken in the first path's folder."""
    section = readme.split("## What is here", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = line.split(" | ")
        if not line.startswith("| `") or len(cells) < 2:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        folder = names[0].rsplit("/", 1)[0] + "/" if "/" in names[0].rstrip("/") else ""
        paths = [names[0], *(n if "/" in n else folder + n for n in names[1:])]
        rows.append((paths, " | ".join(cells[1:])))
    return rows


def covered(relative: str, rows: list[tuple[list[str], str]]) -> bool:
    for paths, text in rows:
        for path in paths:
            if path == relative or Path(relative).match(path):
                return True
            if path.endswith("/") and relative.startswith(path):
                return f"`{relative[len(path) :]}`" in text or "/" in relative[len(path) :]
    return False


def test_layout_table_names_existing_paths() -> None:
    rows = layout_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(rows) > 20
    missing = [p for paths, _ in rows for p in paths if not list(ROOT.glob(p.rstrip("/")))]
    assert not missing, f"the README's layout table names paths that do not exist: {missing}"


def test_every_module_is_in_the_layout_table() -> None:
    rows = layout_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    modules = [
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*"))
        if p.suffix in (".py", ".json") and p.name != "__init__.py" and "__pycache__" not in p.parts
    ]
    assert len(modules) > 40
    absent = [m for m in modules if not covered(m, rows)]
    assert not absent, f"modules the README's layout table does not name: {absent}"


def test_folder_rows_name_each_of_their_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = layout_rows(readme)
    assert covered("lightning_modules/rl/losses.py", rows)
    assert not covered("lightning_modules/rl/not_a_module.py", rows)  # a folder row must name the file
    assert not covered("datamodules/not_a_module.py", rows)
