"""What a rollout engine with its own processor (vLLM) is given: one request per prompt, and the
sampling parameters as a plain dict. Pure functions, tested without vLLM.

A request holds the prompt's token ids with padding removed and the vision placeholders not yet
expanded (the engine's processor expands them again from the media), plus the row's images, and
its videos as sampled frames with their metadata, so that no frame is sampled or resized twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from datamodules.collate import RowMedia
from lightning_modules.model.processing import VISION_TOKENS

# Expanded vision spans, in the text the processor produced; each is folded back to the text the
# chat template gave it. Qwen3-VL expands one video into "<t seconds><|vision_start|>…<|vision_end|>"
# per frame group; the collator gives it a bare <|video_pad|> (datamodules/collate.py).
IMAGE_SPAN = re.compile(r"<\|vision_start\|>(?:<\|image_pad\|>)+<\|vision_end\|>")
VIDEO_SPAN = re.compile(r"<\|vision_start\|>(?:<\|video_pad\|>)+<\|vision_end\|>")
TIMESTAMPED_VIDEO_SPAN = re.compile(
    r"(?:<[0-9.]+ seconds><\|vision_start\|>(?:<\|video_pad\|>)+<\|vision_end\|>)+"
)


@dataclass
class RolloutRequest:
    """One prompt, as the engine takes it."""

    prompt_token_ids: list[int]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[tuple[np.ndarray, dict[str, Any]]] = field(default_factory=list)

    def as_vllm(self) -> dict[str, Any]:
        """A vLLM ``TokensPrompt``: frames are already sampled and every image and frame already
        resized to the budget, so the engine's processor must do neither again."""
        out: dict[str, Any] = {"prompt_token_ids": self.prompt_token_ids}
        media: dict[str, Any] = {}
        if self.images:
            media["image"] = self.images
        if self.videos:
            media["video"] = self.videos
        if media:
            out["multi_modal_data"] = media
            out["mm_processor_kwargs"] = {
                "do_resize": False,
                **({"do_sample_frames": False} if self.videos else {}),
            }
        return out


def unexpanded_prompt_ids(ids: list[int], tokenizer: Any, timestamped_video: bool) -> list[int]:
    """Token ids of the prompt before the processor expanded its image and video placeholders."""
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    text = IMAGE_SPAN.sub("<|vision_start|><|image_pad|><|vision_end|>", text)
    if timestamped_video:
        text = TIMESTAMPED_VIDEO_SPAN.sub("<|video_pad|>", text)
    else:
        text = VIDEO_SPAN.sub("<|vision_start|><|video_pad|><|vision_end|>", text)
    return tokenizer.encode(text, add_special_tokens=False)


def build_requests(prompts: dict[str, Any], tokenizer: Any, timestamped_video: bool) -> list[RolloutRequest]:
    """One request per row of a collated (left-padded) prompt batch."""
    media = prompts.get("row_media")
    if media is None or len(media) != len(prompts["meta"]):
        raise ValueError(
            "the prompt batch has no row_media (the decoded images and videos): collate it with "
            "datamodules.collate.Collator in 'rl' mode"
        )
    requests = []
    for ids, keep, row in zip(prompts["input_ids"].tolist(), prompts["attention_mask"].tolist(), media):
        unpadded = [t for t, k in zip(ids, keep) if k]
        row = row if isinstance(row, RowMedia) else RowMedia()
        requests.append(
            RolloutRequest(
                unexpanded_prompt_ids(unpadded, tokenizer, timestamped_video), row.images, row.videos
            )
        )
    return requests


def request_seed(seed: int, row: int) -> int:
    """Seed of one request (prompt row) of a generate call seeded ``seed``; within int32."""
    return (seed * 1_000_003 + row * 9973) % 2**31


def sampling_params(
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    stop_token_ids: list[int],
    top_k: int = 0,
) -> dict[str, Any]:
    """vLLM ``SamplingParams`` arguments as a plain dict: what HF ``generate`` does for rollouts.

    Sampling stops at ``<|im_end|>`` or ``<|endoftext|>``; the vision special tokens are banned (a
    sampled ``<|image_pad|>`` would break the log-prob recompute); the log-probability of each
    sampled token comes back (``logprobs=0``), for the trainer/engine gap; ``top_k=0`` disables it.
    """
    return {
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
        "seed": seed,
        "stop_token_ids": list(stop_token_ids),
        "bad_words": list(VISION_TOKENS),
        "logprobs": 0,
        "skip_special_tokens": True,
    }
