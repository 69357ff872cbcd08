"""Rollouts: sample responses for a batch of prompts and lay them out as a training batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lightning_modules.backbone import VisionLanguageBackbone

VISION = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")


@dataclass
class Rollouts:
    """``rollouts_per_prompt`` responses per prompt, rows grouped by prompt (row r belongs to prompt r // n)."""

    batch: dict[str, Any]  # prompt + response inputs, ready for `token_logprobs`
    response_mask: torch.Tensor  # [R, T] 1 on response tokens (aligned with batch["input_ids"])
    responses: list[str]
    group_ids: torch.Tensor  # [R]
    meta: list[dict[str, Any]]  # the prompt's metadata, per row
    generated_tokens: int


class RolloutEngine(Protocol):
    """Anything that turns prompts into `Rollouts` (HF generate now; vLLM later)."""

    def __call__(
        self, backbone: VisionLanguageBackbone, prompts: dict[str, Any], rollouts_per_prompt: int
    ) -> Rollouts: ...


def select_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The given rows of a batch (repeats allowed), with their images/videos carried along.

    Pixel tensors are flattened over all images (videos) of the batch, so each row's block of
    patches is located through the grids and the rows' metadata.
    """
    index = torch.tensor(rows, dtype=torch.long)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if (
            isinstance(value, torch.Tensor)
            and value.dim() >= 1
            and value.shape[0] == len(batch["meta"])
            and key not in VISION
        ):
            out[key] = value[index.to(value.device)]
    for kind, pixels_key, grid_key in (
        ("image", "pixel_values", "image_grid_thw"),
        ("video", "pixel_values_videos", "video_grid_thw"),
    ):
        grid = batch.get(grid_key)
        counts = [len(m["media"]) if m["data_type"] == kind else 0 for m in batch["meta"]]
        if grid is None or not any(counts[r] for r in rows):
            out[pixels_key] = out[grid_key] = None
            continue
        if sum(counts) != grid.shape[0]:
            raise ValueError(
                f"{grid_key} has {grid.shape[0]} items but the rows' metadata list {sum(counts)}"
            )
        starts = [sum(counts[:r]) for r in range(len(counts))]
        items = [j for r in rows for j in range(starts[r], starts[r] + counts[r])]
        patches = list(torch.split(batch[pixels_key], grid.prod(dim=-1).tolist()))
        out[pixels_key] = torch.cat([patches[j] for j in items])
        out[grid_key] = grid[torch.tensor(items, dtype=torch.long, device=grid.device)]
        if kind == "video" and batch.get("second_per_grid_ts") is not None:
            out["second_per_grid_ts"] = batch["second_per_grid_ts"][torch.tensor(items, dtype=torch.long)]
    out["meta"] = [batch["meta"][r] for r in rows]
    return out


def repeat_prompts(prompts: dict[str, Any], n: int) -> dict[str, Any]:
    """Each prompt row repeated ``n`` times (consecutively), with its images/videos."""
    return select_rows(prompts, [r for r in range(len(prompts["meta"])) for _ in range(n)])


class HFGenerateEngine:
    """Rollouts with transformers' ``generate`` (eval mode, no grad).

    Args:
        temperature: sampling temperature (released: 1.0).
        top_p: nucleus mass (released: 1.0).
        max_new_tokens: response length cap (released: 4,096).
    """

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 4096):
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def __call__(
        self, backbone: VisionLanguageBackbone, prompts: dict[str, Any], rollouts_per_prompt: int
    ) -> Rollouts:
        was_training = backbone.training
        backbone.eval()
        try:
            out = backbone.generate(
                prompts,
                num_return_sequences=rollouts_per_prompt,
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
            )
        finally:
            backbone.train(was_training)
        batch = repeat_prompts(prompts, rollouts_per_prompt)
        response_mask = out["response_mask"]
        prompt_len = batch["input_ids"].shape[1]
        batch["input_ids"] = out["sequences"]
        batch["attention_mask"] = torch.cat(
            [batch["attention_mask"], response_mask.to(batch["attention_mask"].dtype)], dim=1
        )
        if batch.get("mm_token_type_ids") is not None:
            pad = torch.zeros_like(response_mask, dtype=batch["mm_token_type_ids"].dtype)
            batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], pad], dim=1)
        full_mask = torch.zeros_like(batch["input_ids"])
        full_mask[:, prompt_len:] = response_mask
        tok = backbone.tokenizer
        texts = tok.batch_decode(
            out["response_ids"] * response_mask + tok.pad_token_id * (1 - response_mask),
            skip_special_tokens=True,
        )
        rows = out["sequences"].shape[0]
        groups = torch.arange(rows // rollouts_per_prompt).repeat_interleave(rollouts_per_prompt)
        return Rollouts(batch, full_mask, texts, groups, batch["meta"], int(response_mask.sum()))
