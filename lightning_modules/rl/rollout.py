"""Rollouts: sample responses for a batch of prompts and lay them out as a training batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from lightning_modules.model.backbone import VisionLanguageBackbone, decode_responses, response_mask

VISION = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
ROW_LISTS = ("row_media",)  # per-row lists that travel with their rows


@dataclass
class Rollouts:
    """``rollouts_per_prompt`` responses per prompt, rows grouped by prompt (row r belongs to prompt r // n)."""

    batch: dict[str, Any]  # prompt + response inputs, ready for `token_logprobs`
    response_mask: torch.Tensor  # [R, T] 1 on response tokens (aligned with batch["input_ids"])
    responses: list[str]
    group_ids: torch.Tensor  # [R]
    meta: list[dict[str, Any]]  # the prompt's metadata, per row
    generated_tokens: int
    # [R, T] the engine's log-probabilities of the sampled tokens (0 elsewhere); None if it gives none
    sampling_logprobs: torch.Tensor | None = None


def rollout_seed(seed: int, step: int, rank: int) -> int:
    """The sampling seed of one RL step on one rank (HF: the torch seed; vLLM: the requests' base)."""
    return seed * 1_000_003 + step * 7919 + rank


class RolloutEngine:
    """Turns prompts into `Rollouts`. Subclasses implement ``__call__``; the life-cycle hooks are
    no-ops here and matter for engines that hold a model of their own (vLLM).

    The module calls, per fit: ``setup`` once; per rollout: ``sync_weights`` (every rank, with the
    policy's version: the number of optimizer steps) then ``__call__``; ``teardown`` at the end.
    """

    max_new_tokens: int = 4096
    temperature: float = 1.0
    top_p: float = 1.0

    def setup(self, backbone: VisionLanguageBackbone, rank: int, world_size: int) -> None:
        """Build what the engine needs (once per fit, after the model is placed and sharded)."""

    def sync_weights(self, backbone: VisionLanguageBackbone, version: int) -> None:
        """Make the engine sample from ``backbone``'s current weights (a no-op when it samples from
        the backbone itself). Collective under sharding: every rank calls it with the same version."""

    def wake(self) -> None:
        """Take back the accelerator memory released by ``sleep``."""

    def sleep(self) -> None:
        """Release accelerator memory for training."""

    def teardown(self) -> None:
        """Free the engine (end of fit)."""

    def __call__(
        self,
        backbone: VisionLanguageBackbone,
        prompts: dict[str, Any],
        rollouts_per_prompt: int,
        seed: int = 0,
    ) -> Rollouts:
        raise NotImplementedError


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
    for key in ROW_LISTS:
        if batch.get(key) is not None:
            out[key] = [batch[key][r] for r in rows]
    out["meta"] = [batch["meta"][r] for r in rows]
    return out


def repeat_prompts(prompts: dict[str, Any], n: int) -> dict[str, Any]:
    """Each prompt row repeated ``n`` times (consecutively), with its images/videos."""
    return select_rows(prompts, [r for r in range(len(prompts["meta"])) for _ in range(n)])


def pad_completions(completions: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token lists as one right-padded [R, T] tensor (T: the longest)."""
    out = torch.full(
        (len(completions), max((len(c) for c in completions), default=0)), pad_id, dtype=torch.long
    )
    for row, tokens in enumerate(completions):
        out[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out


def layout_rollouts(
    backbone: VisionLanguageBackbone,
    prompts: dict[str, Any],
    response_ids: torch.Tensor,
    rollouts_per_prompt: int,
    sampling_logprobs: torch.Tensor | None = None,
) -> Rollouts:
    """Responses ([R, T'] token ids, ``rollouts_per_prompt`` consecutive rows per prompt) laid out as
    a training batch: each prompt repeated and followed by its responses. Every engine ends here.

    A response is scored up to and including its first end-of-turn token; later tokens become padding.
    ``sampling_logprobs`` ([R, T'], the engine's) are placed at the same positions.
    """
    tok = backbone.tokenizer
    mask = response_mask(response_ids, backbone.end_token_ids)
    response_ids = torch.where(mask.bool(), response_ids, torch.full_like(response_ids, tok.pad_token_id))
    batch = repeat_prompts(prompts, rollouts_per_prompt)
    device = batch["input_ids"].device
    response_ids, mask = response_ids.to(device), mask.to(device)
    prompt_len = batch["input_ids"].shape[1]
    batch["input_ids"] = torch.cat([batch["input_ids"], response_ids], dim=1)
    batch["attention_mask"] = torch.cat(
        [batch["attention_mask"], mask.to(batch["attention_mask"].dtype)], dim=1
    )
    if batch.get("mm_token_type_ids") is not None:
        pad = torch.zeros_like(mask, dtype=batch["mm_token_type_ids"].dtype)
        batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], pad], dim=1)
    full_mask = torch.zeros_like(batch["input_ids"])
    full_mask[:, prompt_len:] = mask
    sampled = None
    if sampling_logprobs is not None:
        sampled = torch.zeros(batch["input_ids"].shape, dtype=torch.float32, device=device)
        engine = sampling_logprobs.to(device=device, dtype=torch.float32)
        sampled[:, prompt_len:] = torch.where(
            mask.bool(), engine, torch.zeros_like(engine)
        )  # NaN: not reported
    texts = decode_responses(tok, response_ids, mask)
    groups = torch.arange(len(texts) // rollouts_per_prompt).repeat_interleave(rollouts_per_prompt)
    return Rollouts(batch, full_mask, texts, groups, batch["meta"], int(mask.sum()), sampled)


class HFGenerateEngine(RolloutEngine):
    """Rollouts with transformers' ``generate`` (eval mode, no grad), from the policy itself.

    Args:
        temperature: sampling temperature (released: 1.0).
        top_p: nucleus mass (released: 1.0).
        max_new_tokens: response length cap (released: 4,096).
        cache_implementation: ``generate``'s KV cache; ``static`` pre-allocates it at full length
            (fixed shapes, for ``torch.compile``); ``None`` keeps the dynamic cache.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 4096,
        cache_implementation: Literal["static", "dynamic"] | None = None,
    ):
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.cache_implementation = cache_implementation

    def __call__(
        self,
        backbone: VisionLanguageBackbone,
        prompts: dict[str, Any],
        rollouts_per_prompt: int,
        seed: int = 0,
    ) -> Rollouts:
        was_training = backbone.training
        backbone.eval()
        extra = {"cache_implementation": self.cache_implementation} if self.cache_implementation else {}
        try:
            out = backbone.generate(
                prompts,
                num_return_sequences=rollouts_per_prompt,
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                **extra,
            )
        finally:
            backbone.train(was_training)
        return layout_rollouts(backbone, prompts, out["response_ids"], rollouts_per_prompt)
