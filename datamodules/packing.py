"""Padding-free SFT batches: several conversations per row, up to a token budget.

A packed batch keeps every per-sample tensor the processor made (pixels, grids) in sample order and
adds ``pack_lengths``: the token count of each sample, row by row. The backbone derives each sample's
own positions from it (`lightning_modules.model.backbone.packed_position_ids`), which keeps attention inside
each sample. Row padding after the last sample is its own segment, with no label.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100
ROW_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")


def pack_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Sample indices per row: next-fit in the given order, each row at most ``budget`` tokens.

    Order is kept (not first-fit-decreasing) because the processor's pixel and grid tensors are in
    sample order; a reorder would have to permute them too. Every length must fit the budget.
    """
    rows: list[list[int]] = []
    used = budget + 1
    for i, n in enumerate(lengths):
        if n > budget:
            raise ValueError(f"sample {i} has {n} tokens, more than the packing budget {budget}")
        if used + n > budget:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def pack_batch(batch: dict[str, Any], budget: int, pad_id: int) -> dict[str, Any]:
    """A right-padded SFT batch as packed rows (see the module docstring); other keys are kept."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    rows = pack_rows(lengths, budget)
    width = max(sum(lengths[i] for i in row) for row in rows)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
    out = dict(batch)
    for key in ROW_KEYS:
        if batch.get(key) is None:
            continue
        source = batch[key]
        packed = source.new_full((len(rows), width), fill[key])
        for r, row in enumerate(rows):
            pieces = [source[i, : lengths[i]] for i in row]
            packed[r, : sum(lengths[i] for i in row)] = torch.cat(pieces)
        out[key] = packed
    out["pack_lengths"] = [[lengths[i] for i in row] for row in rows]
    return out


def sample_spans(batch: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(row, start, end) of every sample, in sample order: one per row unless the batch is packed."""
    packed = batch.get("pack_lengths")
    if packed is None:
        width = batch["input_ids"].shape[1]
        return [(r, 0, width) for r in range(batch["input_ids"].shape[0])]
    spans = []
    for r, lengths in enumerate(packed):
        start = 0
        for n in lengths:
            spans.append((r, start, start + n))
            start += n
    return spans


def segment_positions(batch: dict[str, Any]) -> torch.Tensor:
    """[R, L] position of each token inside its own sample (0 at every sample start); the row's padding
    tail counts up from 0 as a segment of its own, so no sample attends to it."""
    ids = batch["input_ids"]
    positions = torch.zeros_like(ids)
    for r, lengths in enumerate(batch["pack_lengths"]):
        start = 0
        for n in [*lengths, ids.shape[1] - sum(lengths)]:
            positions[r, start : start + n] = torch.arange(n, device=ids.device)
            start += n
    return positions


def unpack_rows(batch: dict[str, Any], key: str, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch[key]`` of a packed batch as one right-padded row per sample, with the [S, L] mask of
    real tokens: the layout the processor made before packing."""
    spans = sample_spans(batch)
    source = batch[key]
    width = max(end - start for _, start, end in spans)
    out = source.new_full((len(spans), width), fill)
    mask = torch.zeros((len(spans), width), dtype=torch.long, device=source.device)
    for s, (r, start, end) in enumerate(spans):
        out[s, : end - start] = source[r, start:end]
        mask[s, : end - start] = 1
    return out, mask
