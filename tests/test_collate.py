"""Collation through the real offline Qwen-VL processors: mixed rows, padding, labels, metadata."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from datamodules.collate import (
    IGNORE_INDEX,
    Collator,
    Skipped,
    assistant_token_mask,
    build_example,
    load_example,
)
from datamodules.media import MediaError, stage_media
from datamodules.prompts import sft_user_content
from datamodules.records import validate_record


def record(media_dir: Path, kind: str, **fields):
    return validate_record(fields, kind, path="m.json", where="record 0", index=0, media_root=media_dir)


def rl(media_dir: Path, problem_type: str, data_type: str, problem: str, media: list[str], pid: int = 1):
    return record(
        media_dir,
        "rl",
        problem_id=pid,
        problem=problem,
        data_type=data_type,
        problem_type=problem_type,
        options=[],
        data_source="unit",
        answer="<answer>1</answer>",
        **{f"{data_type}s": media},
    )


@pytest.fixture()
def mixed(media_dir: Path):
    return [
        rl(media_dir, "spatial grounding", "image", "<image>Where is it?", ["a.png"], 1),
        rl(
            media_dir,
            "temporal grounding",
            "video",
            "<video>When does the bar pass the middle?",
            ["bar.mp4"],
            2,
        ),
        rl(media_dir, "math", "image", "What is 2+2?", [], 3),
    ]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_mixed_batch_keys_and_token_counts(media_dir: Path, mixed, family: str, processor, processor_25):
    proc = processor if family == "qwen3_vl" else processor_25
    media = stage_media("rl", family)
    batch = Collator(proc, "rl")([build_example(r, "rl", media) for r in mixed])
    for key in (
        "input_ids",
        "attention_mask",
        "pixel_values",
        "pixel_values_videos",
        "image_grid_thw",
        "video_grid_thw",
        "mm_token_type_ids",
    ):
        assert batch[key] is not None, key
    ids, tok = batch["input_ids"], proc.tokenizer
    image_id, video_id = tok.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"])
    merge = 4
    assert int((ids == image_id).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // merge
    assert int((ids == video_id).sum()) == int(batch["video_grid_thw"].prod(-1).sum()) // merge
    # mm_token_type_ids: 1 on image tokens, 2 on video tokens, 0 elsewhere
    tt = batch["mm_token_type_ids"]
    assert torch.equal(tt == 1, ids == image_id) and torch.equal(tt == 2, ids == video_id)
    assert [m["problem_id"] for m in batch["meta"]] == [1, 2, 3]
    assert batch["meta"][1]["fps"] == pytest.approx(8.0) and batch["meta"][0]["media_size"] == [200, 120]


def test_generation_batches_pad_left(media_dir: Path, mixed, processor):
    batch = Collator(processor, "rl")([build_example(r, "rl", stage_media("rl")) for r in mixed])
    mask = batch["attention_mask"]
    assert bool(mask[:, -1].all())  # every prompt ends at the last column
    shortest = int(mask.sum(1).argmin())
    assert int(mask[shortest, 0]) == 0
    text = processor.tokenizer.decode(batch["input_ids"][shortest][mask[shortest].bool()])
    assert text.endswith("<|im_start|>assistant\n")


def test_qwen3_video_prompt_carries_timestamps(media_dir: Path, mixed, processor):
    ex = build_example(mixed[1], "rl", stage_media("rl"))
    batch = Collator(processor, "rl")([ex])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    stamps = [float(s) for s in re.findall(r"<(\d+\.\d) seconds>", text)]
    ts = ex.videos[0].timestamps
    assert stamps == [round((ts[i] + ts[i + 1]) / 2, 1) for i in range(0, len(ts), 2)]
    # one vision_start per temporal patch, never nested inside an outer wrapper
    assert text.count("<|vision_start|>") == len(stamps)
    assert not re.search(r"<\|vision_start\|><\d", text)


def test_sft_labels_cover_only_the_assistant_turn(media_dir: Path, processor):
    answer = '<think>The square is left.</think><answer>{"boxes": [1, 2, 3, 4]}</answer>'
    rec = record(
        media_dir,
        "sft",
        messages=[
            {"role": "user", "content": sft_user_content("Where?", "spatial grounding", "image")},
            {"role": "assistant", "content": answer},
        ],
        images=["a.png"],
    )
    text_only = record(
        media_dir,
        "sft",
        messages=[
            {"role": "user", "content": sft_user_content("2+2?", "numerical", "image")[len("<image>") :]},
            {"role": "assistant", "content": "<think>four</think><answer>4</answer>"},
        ],
    )
    batch = Collator(processor, "sft")(
        [build_example(r, "sft", stage_media("sft")) for r in (rec, text_only)]
    )
    labels = batch["labels"]
    tok = processor.tokenizer
    first = labels[0][labels[0] != IGNORE_INDEX]
    assert tok.decode(first) == answer + "<|im_end|>"
    second = labels[1][labels[1] != IGNORE_INDEX]
    assert tok.decode(second) == "<think>four</think><answer>4</answer><|im_end|>"
    assert bool((batch["attention_mask"][:, 0] == 1).all())  # SFT pads on the right


def test_assistant_token_mask_by_hand():
    ids = torch.tensor([[5, 1, 2, 9, 9, 7, 3, 1, 2, 8, 7, 0]])
    mask = assistant_token_mask(ids, [1, 2], end_id=7)
    assert mask.int().tolist() == [[0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0]]


def test_bad_media_skip_is_counted(media_dir: Path, processor):
    good = rl(media_dir, "numerical", "image", "<image>How many?", ["a.png"], 1)
    bad = rl(media_dir, "tracking", "video", "<video>Track it", ["corrupt.mp4"], 2)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        load_example(bad, "rl", stage_media("rl"), "error")
    items = [load_example(r, "rl", stage_media("rl"), "skip", (0, i)) for i, r in enumerate((good, bad))]
    assert isinstance(items[1], Skipped)
    batch = Collator(processor, "rl")(items)
    assert batch["skipped"] == {"bad_media/tracking/video": 1}
    assert [m["problem_id"] for m in batch["meta"]] == [1] and batch["positions"] == [(0, 0), (0, 1)]


def test_too_long_rows_dropped_and_counted(media_dir: Path, mixed, processor):
    examples = [build_example(r, "rl", stage_media("rl")) for r in mixed]
    full = Collator(processor, "rl")(examples)
    lengths = full["attention_mask"].sum(1).tolist()
    limit = sorted(lengths)[1]
    batch = Collator(processor, "rl", max_length=limit)(examples)
    assert sum(batch["skipped"].values()) == sum(n > limit for n in lengths)
    assert len(batch["meta"]) == sum(n <= limit for n in lengths)
