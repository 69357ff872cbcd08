"""Manifest loading and validation (SPEC §2): typed records, and errors that name file, record and field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from datamodules.records import EvalRecord, RecordError, RLRecord, SFTRecord, iter_records, load_records

RL = {
    "problem_id": 3,
    "problem": "<image>What colour is the square?",
    "data_type": "image",
    "problem_type": "multiple choice",
    "options": ["A. red", "B. blue"],
    "data_source": "unit",
    "answer": "<answer>A</answer>",
    "images": ["img/a.png"],
    "problem_reserved_text": "What colour is the square?",
}
SFT = {
    "messages": [
        {"role": "user", "content": "<video>Q" + "\nExample:\n<answer>3.14</answer>"},
        {"role": "assistant", "content": "<think>t</think><answer>2</answer>"},
    ],
    "videos": ["v.mp4"],
    "problem_type": "numerical",
}
EVAL = {
    "problem_id": 9,
    "problem": "<image>Segment the dog.",
    "data_type": "image",
    "problem_type": "segmentation",
    "options": [],
    "path": "img/b.png",
    "solution": "<answer>{}</answer>",
    "resolution": {"width": 64, "height": 48},
    "segmentation_output": {"size": [48, 64], "counts": "abc"},
}


def write(tmp_path: Path, name: str, records: list, jsonl: bool) -> Path:
    path = tmp_path / name
    text = "\n".join(json.dumps(r) for r in records) + "\n" if jsonl else json.dumps(records, indent=1)
    path.write_text(text)
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_loads_all_three_kinds(tmp_path: Path, jsonl: bool):
    rl = load_records(write(tmp_path, "rl.json", [RL, {**RL, "problem_id": 4}], jsonl), "rl")
    assert [type(r) for r in rl] == [RLRecord, RLRecord]
    assert rl[0].options == ("A. red", "B. blue") and rl[1].problem_id == 4
    assert rl[0].media == (tmp_path / "img/a.png",)
    sft = load_records(write(tmp_path, "sft.json", [SFT], jsonl), "sft")
    assert isinstance(sft[0], SFTRecord) and sft[0].data_type == "video" and sft[0].problem_id == 0
    assert sft[0].target == "<think>t</think><answer>2</answer>"
    ev = load_records(write(tmp_path, "ev.json", [EVAL], jsonl), "eval")
    assert (
        isinstance(ev[0], EvalRecord)
        and ev[0].resolution == (64, 48)
        and ev[0].target == "<answer>{}</answer>"
    )


def test_media_root_overrides_manifest_folder(tmp_path: Path):
    path = write(tmp_path, "rl.json", [RL], False)
    assert load_records(path, "rl", media_root="/data/m")[0].media == (Path("/data/m/img/a.png"),)
    absolute = {**RL, "images": ["/abs/x.png"]}
    assert load_records(write(tmp_path, "abs.json", [absolute], False), "rl")[0].media == (
        Path("/abs/x.png"),
    )


def test_sft_problem_type_inferred_from_template(tmp_path: Path):
    from datamodules.prompts import sft_user_content

    raw = {
        "messages": [
            {"role": "user", "content": sft_user_content("Where?", "spatial grounding", "image")},
            {"role": "assistant", "content": "<think>.</think><answer>{}</answer>"},
        ],
        "images": ["a.png"],
    }
    rec = load_records(write(tmp_path, "s.json", [raw], False), "sft")[0]
    assert (rec.problem_type, rec.data_type) == ("spatial grounding", "image")


def error_of(tmp_path: Path, record: object, kind: str = "rl", jsonl: bool = True) -> RecordError:
    path = write(tmp_path, "bad.jsonl", [RL, record], jsonl)
    with pytest.raises(RecordError) as info:
        load_records(path, kind)
    return info.value


@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"problem_type": "mcq"}, "problem_type", "valid values: multiple choice, numerical"),
        ({"data_type": "audio"}, "data_type", "valid values: image, video"),
        ({"problem_id": "3"}, "problem_id", "expected int, got str"),
        ({"problem_id": True}, "problem_id", "got bool"),
        ({"options": ["A. x", 2]}, "options[1]", "expected str"),
        ({"answer": None}, "answer", "expected str, got NoneType"),
        ({"images": ["a.png", "b.png"]}, "problem", "1 <image> placeholder(s) but 2 media"),
        ({"videos": ["v.mp4"]}, "videos", "data_type is 'image'"),
    ],
)
def test_bad_field_names_file_record_and_field(tmp_path: Path, patch: dict, field: str, fragment: str):
    err = error_of(tmp_path, {**RL, **patch})
    text = str(err)
    assert str(tmp_path / "bad.jsonl") in text
    assert "record 1 (line 2)" in text
    assert f"field '{field}'" in text and err.field == field
    assert fragment in text
    assert "problem_id=" in text


def test_missing_field(tmp_path: Path):
    raw = dict(RL)
    del raw["answer"]
    err = error_of(tmp_path, raw, jsonl=False)
    assert "record 1 (problem_id=3): field 'answer': missing" in str(err)


def test_malformed_jsonl_line(tmp_path: Path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(RL) + "\n\n{not json\n")
    with pytest.raises(RecordError, match=r"broken.jsonl: record 1 \(line 3\).*malformed JSON line"):
        load_records(path, "rl")


def test_malformed_json_list(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text('[{"problem_id": 1},\n')
    with pytest.raises(RecordError, match="malformed JSON list"):
        load_records(path, "rl")


def test_segmentation_eval_requires_masks(tmp_path: Path):
    raw = dict(EVAL)
    del raw["segmentation_output"]
    with pytest.raises(RecordError, match="segmentation_output': missing"):
        load_records(write(tmp_path, "e.json", [raw], False), "eval")
    video = {**EVAL, "data_type": "video"}
    with pytest.raises(RecordError, match="'fps': missing"):
        load_records(write(tmp_path, "v.json", [video], False), "eval")


def test_sft_roles_checked(tmp_path: Path):
    raw = {**SFT, "messages": [{"role": "system", "content": "x"}, SFT["messages"][1]]}
    with pytest.raises(RecordError, match=r"messages\[0\].role.*valid values: user, assistant"):
        load_records(write(tmp_path, "s.json", [raw], False), "sft")


def test_iter_records_collects_every_error(tmp_path: Path):
    path = write(tmp_path, "mixed.jsonl", [RL, {**RL, "data_type": "x"}, RL, {**RL, "options": 5}], True)
    items = list(iter_records(path, "rl"))
    assert [isinstance(i, RecordError) for i in items] == [False, True, False, True]


def test_unknown_kind(tmp_path: Path):
    with pytest.raises(ValueError, match="valid: rl, sft, eval"):
        load_records(write(tmp_path, "r.json", [RL], False), "train")


def test_tracking_frame_truth_checked(tmp_path: Path):
    track = {
        **EVAL,
        "problem_type": "tracking",
        "data_type": "video",
        "fps": 2,
        "problem": "<video>Track it.",
    }
    del track["segmentation_output"]
    good = {**track, "frame_boxes": [[0, 0, 10, 10], [1, 0, 10, 10]], "frame_absent": [0, 1]}
    record = load_records(write(tmp_path, "ok.json", [good], False), "eval")[0]
    assert record.frame_boxes == ((0.0, 0.0, 10.0, 10.0), (1.0, 0.0, 10.0, 10.0)) and record.frame_absent == (
        0,
        1,
    )
    cases = [
        ({"frame_boxes": [[0, 0, 10]]}, "frame_boxes", "[x, y, w, h]"),
        ({"frame_boxes": [[0, 0, 10, True]]}, "frame_boxes", "[x, y, w, h]"),
        ({"frame_boxes": [[0, 0, 1, 1]], "frame_absent": [0, 0]}, "frame_absent", "1 values of 0 or 1"),
        ({"frame_absent": [0]}, "frame_absent", "given without frame_boxes"),
    ]
    for patch, field, fragment in cases:
        with pytest.raises(RecordError, match=rf"bad.json: .*problem_id=9.*'{field}'.*{re.escape(fragment)}"):
            load_records(write(tmp_path, "bad.json", [{**track, **patch}], False), "eval")
