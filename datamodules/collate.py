"""From validated records to model-ready batches through the backbone's (injected) processor."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from datamodules.media import MediaConfig, MediaError, VideoClip, load_image, load_video
from datamodules.packing import IGNORE_INDEX, pack_batch
from datamodules.prompts import build_prompt, split_content
from datamodules.records import Record, SFTRecord
from datamodules.tasks import task_key

Mode = Literal["sft", "rl", "eval"]
MODES: tuple[str, ...] = ("sft", "rl", "eval")
VIDEO_WRAPPER = "<|vision_start|><|video_pad|><|vision_end|>"
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@dataclass
class Example:
    """One record with its media decoded and its chat turns built."""

    record: Record
    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[VideoClip] = field(default_factory=list)
    position: tuple[int, int] | None = None  # (epoch, place) in the sampler's stream, for exact resume
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)

    @property
    def task(self) -> str:
        return task_key(self.record.problem_type, self.record.data_type, "task_modality")

    def meta(self) -> dict[str, Any]:
        r = self.record
        sizes = self.image_sizes or [v.original_size for v in self.videos]
        return {
            "problem_id": r.problem_id,
            "source": r.source,
            "index": r.index,
            "problem_type": r.problem_type,
            "data_type": r.data_type,
            "data_source": r.data_source,
            "answer": r.target,
            "problem": getattr(r, "problem", None),  # the question text (a reward model's prompt)
            "options": list(r.options),
            "media": [str(p) for p in r.media],
            "media_size": list(sizes[0]) if sizes else None,
            "fps": self.videos[0].native_fps if self.videos else getattr(r, "fps", None),
            "sample_fps": self.videos[0].sample_fps if self.videos else None,
            "timestamps": self.videos[0].timestamps if self.videos else None,
            "position": self.position,
        }


@dataclass
class RowMedia:
    """One row's decoded media, as a rollout engine that runs its own processor takes them: images,
    and videos as frames ``[T, H, W, 3]`` (uint8) with their sampling metadata."""

    images: list[Image.Image] = field(default_factory=list)
    videos: list[tuple[np.ndarray, dict[str, Any]]] = field(default_factory=list)


def video_metadata(clip: VideoClip) -> dict[str, Any]:
    """What the Qwen-VL video processors need to know of sampled frames (``VideoMetadata`` fields)."""
    return {
        "total_num_frames": clip.total_frames,
        "fps": clip.native_fps,
        "width": clip.original_size[0],
        "height": clip.original_size[1],
        "duration": clip.total_frames / clip.native_fps if clip.native_fps else None,
        "frames_indices": list(clip.frame_indices),
    }


def row_media(example: Example) -> RowMedia:
    frames = [
        (clip.frames.permute(0, 2, 3, 1).contiguous().numpy(), video_metadata(clip))
        for clip in example.videos
    ]
    return RowMedia(list(example.images), frames)


@dataclass
class Skipped:
    """A record dropped because of bad media (``on_bad_media="skip"``); counted, never silent."""

    record: Record
    reason: str
    position: tuple[int, int] | None = None

    @property
    def task(self) -> str:
        return task_key(self.record.problem_type, self.record.data_type, "task_modality")


def user_parts(record: Record) -> list[dict[str, str]]:
    """The user turn as chat parts; media with no placeholder in the text go first."""
    parts = split_content(build_prompt(record))
    if record.media and not any(p["type"] != "text" for p in parts):
        parts = [{"type": record.data_type} for _ in record.media] + parts
    return parts


def build_example(
    record: Record, mode: Mode, media: MediaConfig, position: tuple[int, int] | None = None
) -> Example:
    """Decode a record's media and build its chat turns (raises `MediaError` on bad media)."""
    label = f"{record.source} #{record.index} problem_id={record.problem_id}"
    images, sizes, videos = [], [], []
    for path in record.media:
        if record.data_type == "image":
            item = load_image(path, media.image, media.factor, record=label)
            images.append(item.image)
            sizes.append(item.original_size)
        else:
            videos.append(
                load_video(
                    path,
                    media.video_frame,
                    media.factor,
                    media.fps,
                    media.max_frames,
                    media.min_frames,
                    record=label,
                )
            )
    messages: list[dict[str, Any]] = [{"role": "user", "content": user_parts(record)}]
    if mode == "sft":
        assert isinstance(record, SFTRecord)
        messages += [{"role": t.role, "content": t.content} for t in record.messages[1:]]
    return Example(record, messages, images, videos, position, sizes)


def prompt_lengths(processor: Any, records: list[Record]) -> list[int]:
    """Tokens of each record's chat prompt with one placeholder per medium: a lower bound of its
    length once the media are expanded (text only, so it runs over a whole manifest at set-up)."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": user_parts(r)}], tokenize=False, add_generation_prompt=True
        )
        for r in records
    ]
    if not texts:
        return []
    return [len(ids) for ids in processor.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def assistant_token_mask(input_ids: torch.Tensor, header_ids: list[int], end_id: int) -> torch.Tensor:
    """True on the tokens of every assistant turn: after its header, up to and including ``<|im_end|>``."""
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    n = len(header_ids)
    header = torch.tensor(header_ids, dtype=input_ids.dtype)
    for row, ids in enumerate(input_ids):
        if ids.numel() < n:
            continue
        starts = (ids.unfold(0, n, 1) == header).all(dim=1).nonzero().flatten().tolist()
        for s in starts:
            begin = s + n
            ends = (ids[begin:] == end_id).nonzero()
            stop = begin + int(ends[0]) + 1 if len(ends) else ids.numel()
            mask[row, begin:stop] = True
    return mask


class Collator:
    """Turns `Example`s into one batch with the injected Qwen-VL processor.

    Rows of image, video and text only mix freely. Generation modes pad on the left (right padding
    would misalign the image tokens with the prompt in batched generation). With ``pack_tokens`` (SFT
    only) the conversations are packed into rows of at most that many tokens (`datamodules.packing`);
    a conversation longer than the budget is skipped and counted, like one over ``max_length``.
    """

    def __init__(
        self, processor: Any, mode: Mode, max_length: int | None = None, pack_tokens: int | None = None
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if pack_tokens is not None and mode != "sft":
            raise ValueError(f"pack_tokens packs SFT conversations; the {mode!r} stage does not pack")
        if pack_tokens is not None and pack_tokens < 1:
            raise ValueError(f"pack_tokens must be positive, got {pack_tokens}")
        self.processor, self.mode, self.pack_tokens = processor, mode, pack_tokens
        limits = [n for n in (max_length, pack_tokens) if n is not None]
        self.max_length = min(limits) if limits else None
        tok = processor.tokenizer
        self.header_ids = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.timestamped_video = type(processor).__name__.startswith("Qwen3VL")

    def _process(self, examples: list[Example]) -> dict[str, Any]:
        texts = [
            self.processor.apply_chat_template(
                ex.messages, tokenize=False, add_generation_prompt=self.mode != "sft"
            )
            for ex in examples
        ]
        if self.timestamped_video:
            # Qwen3-VL expands each video into "<t seconds><|vision_start|>…<|vision_end|>" per frame
            # itself; some transformers releases keep the template's outer wrapper too, nesting the
            # markers. Dropping it gives the layout the released models were trained on.
            texts = [t.replace(VIDEO_WRAPPER, "<|video_pad|>") for t in texts]
        images = [im for ex in examples for im in ex.images]
        clips = [clip for ex in examples for clip in ex.videos]
        kwargs: dict[str, Any] = {}
        if clips:
            from transformers.video_utils import VideoMetadata

            kwargs["videos"] = [c.frames for c in clips]
            kwargs["video_metadata"] = [VideoMetadata(**video_metadata(c)) for c in clips]
            kwargs["do_sample_frames"] = False
        out = self.processor(
            text=texts,
            images=images or None,
            do_resize=False,
            padding=True,
            padding_side="right" if self.mode == "sft" else "left",
            return_tensors="pt",
            return_mm_token_type_ids=True,
            **kwargs,
        )
        return dict(out)

    def __call__(self, items: list[Example | Skipped]) -> dict[str, Any]:
        examples = [it for it in items if isinstance(it, Example)]
        skipped = Counter(f"bad_media/{it.task}" for it in items if isinstance(it, Skipped))
        positions = [it.position for it in items]
        batch = self._process(examples) if examples else {}
        if examples and self.max_length is not None:
            lengths = batch["attention_mask"].sum(dim=1)
            keep = [ex for ex, n in zip(examples, lengths.tolist()) if n <= self.max_length]
            if len(keep) < len(examples):
                skipped.update(
                    f"too_long/{ex.task}" for ex, n in zip(examples, lengths.tolist()) if n > self.max_length
                )
                examples = keep
                batch = self._process(examples) if examples else {}
        for key in VISION_KEYS:
            batch.setdefault(key, None)
        if self.mode == "sft" and examples:
            mask = (
                assistant_token_mask(batch["input_ids"], self.header_ids, self.end_id)
                & batch["attention_mask"].bool()
            )
            batch["labels"] = torch.where(
                mask, batch["input_ids"], torch.full_like(batch["input_ids"], IGNORE_INDEX)
            )
            if self.pack_tokens is not None:
                batch = pack_batch(batch, self.pack_tokens, self.processor.tokenizer.pad_token_id)
        batch["meta"] = [ex.meta() for ex in examples]
        if self.mode == "rl":  # for rollout engines with a processor of their own (vLLM)
            batch["row_media"] = [row_media(ex) for ex in examples]
        batch["skipped"] = dict(skipped)
        batch["skip_examples"] = [it.reason for it in items if isinstance(it, Skipped)][:3]
        batch["positions"] = positions
        return batch


def load_example(
    record: Record, mode: Mode, media: MediaConfig, on_bad_media: str, position: tuple[int, int] | None = None
) -> Example | Skipped:
    """`build_example`, or a `Skipped` marker when ``on_bad_media == "skip"``."""
    try:
        return build_example(record, mode, media, position)
    except MediaError as e:
        if on_bad_media != "skip":
            raise
        return Skipped(record, str(e), position)
