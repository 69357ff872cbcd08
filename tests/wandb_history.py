"""The history rows of an offline W&B run, read from its ``run-<id>.wandb`` file.

wandb 0.31 ships no reader for its transaction log (the old ``wandb.sdk.internal.datastore`` is gone),
so this walks the format by hand: a 7-byte file header (``:W&B``, magic, version), then LevelDB-style
log records in 32 KiB blocks (4-byte checksum, 2-byte length, 1-byte type: full/first/middle/last),
each payload a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's zero-filled trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            yield parts


def history_rows(run_file: str | Path) -> list[dict[str, Any]]:
    """Every ``run.log`` row of the run, values decoded from JSON."""
    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file}: not a W&B run file")
    rows = []
    for payload in _payloads(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
