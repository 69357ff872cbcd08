"""Tiny randomly initialised Qwen-VL configs: the real architectures at toy size, for CPU tests and the demo."""

from __future__ import annotations

from typing import Any

# Vocabulary large enough for the real Qwen tokenizer (151,643 BPE + 26 added tokens), as the
# released checkpoints pad it.
QWEN_VOCAB = 151_936
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653


def tiny_config(
    family: str,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vision_hidden: int = 32,
    vocab_size: int = QWEN_VOCAB,
    token_ids: dict[str, int] | None = None,
) -> Any:
    """A small config of ``family``'s architecture; token ids default to the real tokenizer's.

    ``token_ids`` (image/video/vision_start/vision_end) and ``vocab_size`` fit another vocabulary.
    """
    head_dim = hidden // heads
    section = [head_dim // 4, head_dim // 8, head_dim // 8]  # mrope halves: (t, h, w) sum to head_dim / 2
    section[0] += head_dim // 2 - sum(section)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads // 2,
        "head_dim": head_dim,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        "tie_word_embeddings": True,
    }
    ids = token_ids or {
        "image_token_id": IMAGE_TOKEN,
        "video_token_id": VIDEO_TOKEN,
        "vision_start_token_id": VISION_START,
        "vision_end_token_id": VISION_END,
    }
    vision = {
        "depth": 2,
        "hidden_size": vision_hidden,
        "intermediate_size": vision_hidden * 2,
        "num_heads": 2,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden,
    }
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    raise ValueError(f"unknown backbone family {family!r}; valid: qwen3_vl, qwen2_5_vl")
