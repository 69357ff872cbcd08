"""Evaluation outputs: the append-only predictions.jsonl, metrics.json and a markdown summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
SUMMARY = "summary.md"
log = logging.getLogger(__name__)


def row_key(row: dict[str, Any]) -> tuple[str, int]:
    """A prediction's identity: (benchmark, problem_id)."""
    return str(row["benchmark"]), int(row["problem_id"])


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a [H, W] bool mask, with a JSON-ready ``counts`` string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """A [H, W] bool mask from COCO RLE (compressed string or uncompressed list counts)."""
    from pycocotools import mask as mask_utils

    size = [int(v) for v in rle["size"]]
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": size, "counts": counts}, *size)
    else:
        rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def drop_torn_tail(path: Path) -> int:
    """Cut a JSONL file back to its last complete line (a writer killed mid-row leaves a fragment with
    no newline); returns the bytes removed, with a warning naming the file."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as f:
        f.truncate(keep)
    log.warning(
        "%s: dropped an unfinished last row (%d bytes) left by an interrupted run", path, len(data) - keep
    )
    return len(data) - keep


class PredictionStore:
    """predictions.jsonl under ``output_dir``, appended batch by batch.

    With several processes each rank appends to its own ``predictions.rank{r}.jsonl`` while it runs;
    rank 0 folds those into predictions.jsonl at the end (`merge`). An interrupted run leaves its
    rows behind in either file, and `done` reads both, so a re-run skips what is there.
    """

    def __init__(self, output_dir: str | Path, rank: int = 0, world_size: int = 1):
        self.dir = Path(output_dir)
        self.path = self.dir / PREDICTIONS
        self.shard = self.path if world_size == 1 else self.dir / f"predictions.rank{rank}.jsonl"
        for path in {self.path, self.shard}:  # later rows must not be glued to a killed writer's fragment
            drop_torn_tail(path)

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """Rows of a JSONL file; a torn last line (a killed writer) is ignored."""
        if not path.exists():
            return []
        rows = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if n == len(lines) - 1:
                    continue  # cut off mid-write; that sample is simply redone
                raise ValueError(f"{path}: line {n + 1} is not valid JSON ({err})") from err
        return rows

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("predictions.rank*.jsonl"))

    def done(self) -> set[tuple[str, int]]:
        """Keys already predicted, in predictions.jsonl or a rank file left by an interrupted run."""
        return {row_key(r) for p in [self.path, *self.shards()] for r in self.read(p)}

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.shard.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()

    def merge(self, new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append to predictions.jsonl the rows (``new_rows`` and leftover rank files) it lacks, drop
        the rank files, and return every row once, in the order of ``index`` within each benchmark."""
        rows = self.read(self.path)
        have = {row_key(r) for r in rows}
        extra = []
        for row in [*new_rows, *(r for p in self.shards() for r in self.read(p))]:
            if row_key(row) not in have:
                have.add(row_key(row))
                extra.append(row)
        self.dir.mkdir(parents=True, exist_ok=True)
        if extra:
            with self.path.open("a", encoding="utf-8") as f:
                for row in sorted(extra, key=lambda r: (r["benchmark"], r["index"])):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for p in self.shards():
            p.unlink()
        return sorted(rows + extra, key=lambda r: (r["benchmark"], r["index"]))


def write_metrics(output_dir: str | Path, metrics: dict[str, Any]) -> Path:
    path = Path(output_dir) / METRICS
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def summary_table(metrics: dict[str, Any]) -> str:
    """Markdown: one line per benchmark and task, its figures, sample and unparseable counts."""
    lines = ["| benchmark | task | figures | samples | unparseable |", "|---|---|---|---:|---:|"]
    for bench, entry in sorted(metrics["benchmarks"].items()):
        for task, figures in sorted(entry["tasks"].items()):
            shown = ", ".join(
                f"{k} {100 * v:.1f}" for k, v in figures.items() if k not in ("samples", "unparseable")
            )
            lines.append(f"| {bench} | {task} | {shown} | {figures['samples']} | {figures['unparseable']} |")
    return "\n".join(lines) + "\n\nFigures are percentages; the protocols are listed in metrics.json.\n"


def write_summary(output_dir: str | Path, metrics: dict[str, Any]) -> Path:
    path = Path(output_dir) / SUMMARY
    path.write_text(summary_table(metrics), encoding="utf-8")
    return path
