"""Rollouts: sample responses for a batch of prompts and lay them out as a training batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lightning_modules.backbone import VisionLanguageBackbone


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

    def __call__(self, backbone: VisionLanguageBackbone, prompts: dict[str, Any], rollouts_per_prompt: int) -> Rollouts: ...


def _repeat_blocks(items: list[Any], counts: list[int], n: int) -> list[Any]:
    """Items grouped into consecutive per-row blocks of ``counts``; each block repeated ``n`` times."""
    out, cursor = [], 0
    for c in counts:
        out += items[cursor : cursor + c] * n
        cursor += c
    return out


def repeat_prompts(prompts: dict[str, Any], n: int) -> dict[str, Any]:
    """Each prompt row repeated ``n`` times, with its images/videos (flattened patch tensors) repeated too."""
    out: dict[str, Any] = {}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if prompts.get(key) is not None:
            out[key] = prompts[key].repeat_interleave(n, dim=0)
    for kind, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")):
        grid = prompts.get(grid_key)
        if grid is None:
            out[pixels_key] = out[grid_key] = None
            continue
        counts = [len(m["media"]) if m["data_type"] == kind else 0 for m in prompts["meta"]]
        if sum(counts) != grid.shape[0]:
            raise ValueError(f"{grid_key} has {grid.shape[0]} items but the rows' metadata list {sum(counts)}")
        pixels = list(torch.split(prompts[pixels_key], grid.prod(dim=-1).tolist()))
        out[pixels_key] = torch.cat(_repeat_blocks(pixels, counts, n))
        out[grid_key] = torch.stack(_repeat_blocks(list(grid), counts, n))
        if kind == "video" and prompts.get("second_per_grid_ts") is not None:
            out["second_per_grid_ts"] = torch.stack(_repeat_blocks(list(prompts["second_per_grid_ts"]), counts, n))
    out["meta"] = [m for m in prompts["meta"] for _ in range(n)]
    return out


class HFGenerateEngine:
    """Rollouts with transformers' ``generate`` (eval mode, no grad).

    Args:
        temperature: sampling temperature (released: 1.0).
        top_p: nucleus mass (released: 1.0).
        max_new_tokens: response length cap (released: 4,096).
    """

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 4096):
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    def __call__(self, backbone: VisionLanguageBackbone, prompts: dict[str, Any], rollouts_per_prompt: int) -> Rollouts:
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
        batch["attention_mask"] = torch.cat([batch["attention_mask"], response_mask.to(batch["attention_mask"].dtype)], dim=1)
        if batch.get("mm_token_type_ids") is not None:
            pad = torch.zeros_like(response_mask, dtype=batch["mm_token_type_ids"].dtype)
            batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], pad], dim=1)
        full_mask = torch.zeros_like(batch["input_ids"])
        full_mask[:, prompt_len:] = response_mask
        tok = backbone.tokenizer
        texts = tok.batch_decode(out["response_ids"] * response_mask + tok.pad_token_id * (1 - response_mask), skip_special_tokens=True)
        rows = out["sequences"].shape[0]
        groups = torch.arange(rows // rollouts_per_prompt).repeat_interleave(rollouts_per_prompt)
        return Rollouts(batch, full_mask, texts, groups, batch["meta"], int(response_mask.sum()))
