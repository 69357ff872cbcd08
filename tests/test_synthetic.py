"""Synthetic suite: manifests validate, generation is deterministic, ground truth is exact.

Ground truth is checked against the written files (PNG pixels, decord-decoded MP4 frames, decoded
RLE), not against the generator's own bookkeeping. Only the palette (colour names → RGB) is shared.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import decord
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pycocotools import mask as mask_utils

from datamodules.prompts import sft_user_content
from datamodules.records import load_records
from datamodules.synthetic import SYNTHETIC_TASKS, WORDS, generate_suite
from datamodules.synthetic_draw import BACKGROUNDS, COLOURS, TEXT_COLOURS
from datamodules.tasks import DATA_TYPES, PROBLEM_TYPES

PER_TASK = 2
VIDEO_TOL = 30  # max per-channel error of a decoded object pixel (colours are ≥ 70 apart)
Case = dict[str, Any]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_suite(tmp_path_factory.mktemp("suite"), per_task=PER_TASK, seed=0)


def _inner(text: str) -> str:
    m = re.search(r"<answer>(.*?)</answer>", text, re.S)
    assert m, text
    return m.group(1).strip()


def _cases(suite: dict[str, Path], problem_type: str, data_type: str) -> Iterator[Case]:
    """Every sample of a task from all three manifests, as (media, question, options, answer)."""
    root = suite["rl"].parent
    for split, path in suite.items():
        for r in json.loads(path.read_text()):
            if (r["problem_type"], r["data_type"]) != (problem_type, data_type):
                continue
            if split == "rl":
                media, question, answer = r[f"{data_type}s"][0], r["problem_reserved_text"], r["answer"]
            elif split == "sft":
                media, answer = r[f"{data_type}s"][0], r["messages"][1]["content"]
                question = r["messages"][0]["content"][len(f"<{data_type}>") :].split("\n")[0]
            else:
                media, question, answer = r["path"], r["problem"], r["solution"]
            options = (
                r["options"]
                if split != "sft"
                else re.findall(r"^[A-D]\. .*$", r["messages"][0]["content"], re.M)
            )
            yield {"split": split, "media": root / media, "question": question, "answer": _inner(answer), "record": r,
                   "options": options}  # fmt: skip


def _option(case: Case) -> str:
    """Text of the option the answer letter names."""
    letter = case["answer"]
    texts = [o[3:] for o in case["options"] if o.startswith(f"{letter}. ")]
    assert len(texts) == 1, case
    return texts[0]


# ---------------------------------------------------------------- pixel helpers


def _image(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _video(path: Path) -> tuple[np.ndarray, float]:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy(), vr.get_avg_fps()


def _colour_mask(frame: np.ndarray, rgb: tuple[int, int, int], tol: int = 0) -> np.ndarray:
    return np.abs(frame.astype(np.int16) - np.array(rgb, dtype=np.int16)).max(axis=-1) <= tol


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[[0, -1]] = False
    out[:, [0, -1]] = False
    return out


def _present(frame: np.ndarray, colour: str) -> np.ndarray:
    """Decoded pixels of an object colour, eroded once to drop compression fringes."""
    return _erode(_colour_mask(frame, COLOURS[colour], VIDEO_TOL))


def _components(mask: np.ndarray, min_px: int = 1) -> list[np.ndarray]:
    """4-connected components, by min-label propagation."""
    big = mask.size + 1
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), big)
    while True:
        new = labels.copy()
        new[1:] = np.minimum(new[1:], labels[:-1])
        new[:-1] = np.minimum(new[:-1], labels[1:])
        new[:, 1:] = np.minimum(new[:, 1:], labels[:, :-1])
        new[:, :-1] = np.minimum(new[:, :-1], labels[:, 1:])
        new[~mask] = big
        if (new == labels).all():
            break
        labels = new
    comps = [labels == v for v in np.unique(labels[mask])]
    return [c for c in comps if c.sum() >= min_px]


def _px_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _norm(box: tuple[int, int, int, int], w: int, h: int) -> list[int]:
    return [
        round(box[0] * 1000 / w),
        round(box[1] * 1000 / h),
        round(box[2] * 1000 / w),
        round(box[3] * 1000 / h),
    ]


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _shape(mask: np.ndarray) -> str:
    """Shape of one exact (lossless) component from its fill ratio and bottom row."""
    x0, y0, x1, y1 = _px_box(mask)
    crop = mask[y0:y1, x0:x1]
    fill = crop.mean()
    if fill > 0.95:
        return "square"
    if fill > 0.7:
        return "circle"
    return "triangle" if crop[-1].mean() > 0.8 else "diamond"


def _objects(img: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(colour, shape, mask) of every shape in a PNG."""
    return [(c, _shape(m), m) for c, rgb in COLOURS.items() for m in _components(_colour_mask(img, rgb))]


def _pixel(point: list[int], w: int, h: int) -> tuple[int, int]:
    return int(point[0] * w / 1000), int(point[1] * h / 1000)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


@lru_cache(maxsize=4096)
def _ink_render(text: str, size: int) -> np.ndarray:
    """A fresh 1-bit rendering of ``text`` in PIL's default font, cropped tight."""
    font = ImageFont.load_default(size=size)
    im = Image.new("L", (size * (len(text) + 2), size * 3), 0)
    d = ImageDraw.Draw(im)
    d.fontmode = "1"
    d.text((size, size), text, fill=255, font=font)
    m = np.asarray(im) > 0
    x0, y0, x1, y1 = _px_box(m)
    return m[y0:y1, x0:x1]


def _matches_rendering(ink: np.ndarray, text: str) -> bool:
    x0, y0, x1, y1 = _px_box(ink)
    crop = ink[y0:y1, x0:x1]
    return any(np.array_equal(crop, _ink_render(text, s)) for s in range(8, 49))


# ---------------------------------------------------------------- manifests and determinism


def test_manifests_validate_and_cover_every_task(suite: dict[str, Path]) -> None:
    assert set(suite) == {"rl", "sft", "eval"}
    assert {pt for pt, _ in SYNTHETIC_TASKS} == set(PROBLEM_TYPES)
    assert len(set(SYNTHETIC_TASKS)) == 16
    assert all(pt in PROBLEM_TYPES and dt in DATA_TYPES for pt, dt in SYNTHETIC_TASKS)
    ids = []
    for kind, path in suite.items():
        records = load_records(path, kind)
        assert len(records) == PER_TASK * len(SYNTHETIC_TASKS)
        counts = {task: 0 for task in SYNTHETIC_TASKS}
        for r in records:
            counts[(r.problem_type, r.data_type)] += 1
            assert r.data_source == "synthetic"
            assert all(m.is_file() and m.parent.parent.parent == path.parent for m in r.media)
        assert set(counts.values()) == {PER_TASK}
        ids += [r.problem_id for r in records]
        raw = json.loads(path.read_text())
        media = [r.get("path") or (r.get("images") or r.get("videos"))[0] for r in raw]
        assert all(not Path(m).is_absolute() for m in media)
    assert len(ids) == len(set(ids))
    files = sorted(p.name for p in (suite["rl"].parent / "media").rglob("*.*"))
    assert len(files) == 3 * PER_TASK * len(SYNTHETIC_TASKS)


def test_rl_and_sft_records_follow_the_official_layout(suite: dict[str, Path]) -> None:
    for r in json.loads(suite["rl"].read_text()):
        placeholder = f"<{r['data_type']}>"
        assert r["problem"] == placeholder + r["problem_reserved_text"]
        assert re.fullmatch(r"<answer>.+</answer>", r["answer"], re.S)
        assert (r["problem_type"] == "multiple choice") == bool(r["options"])
    for r in json.loads(suite["sft"].read_text()):
        user, assistant = (m["content"] for m in r["messages"])
        question = user[len(f"<{r['data_type']}>") :].split("\nOptions:\n")[0].split("\nPlease answer")[0]
        options = re.findall(r"^[A-D]\. .*$", user, re.M)
        assert user == sft_user_content(question, r["problem_type"], r["data_type"], options)
        assert re.fullmatch(r"<think>[^<]+</think><answer>[^<]+</answer>", assistant)
    for r in json.loads(suite["eval"].read_text()):
        assert "<image>" not in r["problem"] and "<video>" not in r["problem"]
        if r["data_type"] == "video":
            assert r["fps"] in (4, 5, 8)


def test_same_seed_same_suite_and_other_seed_differs(suite: dict[str, Path], tmp_path: Path) -> None:
    again = generate_suite(tmp_path / "again", per_task=PER_TASK, seed=0)
    for kind in suite:
        assert again[kind].read_text() == suite[kind].read_text()
    root_a, root_b = suite["rl"].parent / "media", again["rl"].parent / "media"
    for a in sorted(root_a.rglob("*.*")):
        b = root_b / a.relative_to(root_a)
        if a.suffix == ".png":
            assert np.array_equal(_image(a), _image(b))
        else:
            assert np.array_equal(_video(a)[0], _video(b)[0])
    other = generate_suite(tmp_path / "other", per_task=PER_TASK, seed=1)
    assert other["rl"].read_text() != suite["rl"].read_text()


def test_process_pool_gives_the_same_suite(tmp_path: Path) -> None:
    serial = generate_suite(tmp_path / "serial", per_task=1, seed=3, workers=0)
    pooled = generate_suite(tmp_path / "pooled", per_task=1, seed=3, workers=2)
    for kind in serial:
        assert serial[kind].read_text() == pooled[kind].read_text()
    for a in sorted((tmp_path / "serial" / "media").rglob("*.png")):
        assert np.array_equal(_image(a), _image(tmp_path / "pooled" / a.relative_to(tmp_path / "serial")))


def test_videos_decode_at_their_native_fps(suite: dict[str, Path]) -> None:
    for r in json.loads(suite["eval"].read_text()):
        if r["data_type"] != "video":
            continue
        vr = decord.VideoReader(str(suite["eval"].parent / r["path"]))
        h, w = vr[0].shape[:2]
        assert vr.get_avg_fps() == r["fps"]
        assert 160 <= w <= 320 and h % 2 == 0
        assert 1 <= len(vr) / r["fps"] <= 32 + 1
        assert vr.get_frame_timestamp(len(vr) - 1)[0] == pytest.approx((len(vr) - 1) / r["fps"], abs=1e-4)


# ---------------------------------------------------------------- image ground truth


def test_image_multiple_choice(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "multiple choice", "image"):
        objects, chosen = _objects(_image(case["media"])), _option(case)
        if m := re.fullmatch(r"What colour is the (\w+)\?", case["question"]):
            assert [c for c, s, _ in objects if s == m.group(1)] == [chosen]
        else:
            colour = re.fullmatch(r"What shape is the (\w+) object\?", case["question"]).group(1)
            assert [s for c, s, _ in objects if c == colour] == [chosen]


def test_image_numerical(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "numerical", "image"):
        colour, shape = re.fullmatch(
            r"How many (\w+) (\w+)s are there in the image\?", case["question"]
        ).groups()
        found = [s for c, s, _ in _objects(_image(case["media"])) if c == colour]
        assert found == [shape] * int(case["answer"])


def _ink(img: np.ndarray) -> np.ndarray:
    return np.any([_colour_mask(img, rgb) for rgb in TEXT_COLOURS.values()], axis=0)


def test_image_ocr_matches_a_fresh_rendering(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "OCR", "image"):
        assert _matches_rendering(_ink(_image(case["media"])), case["answer"]), case["answer"]


def test_image_math_rendered_expression_evaluates_to_the_answer(suite: dict[str, Path]) -> None:
    """SFT chains of thought name the expression: it is what the image shows, and it gives the answer."""
    checked = 0
    for case in _cases(suite, "math", "image"):
        ink = _ink(_image(case["media"]))
        if case["split"] != "sft":
            assert re.fullmatch(r"-?\d+", case["answer"]) and ink.sum() > 100
            continue
        expr = re.search(r"the expression (.+?)\. ", case["record"]["messages"][1]["content"]).group(1)
        assert re.fullmatch(r"[\d ()+*-]+", expr)
        assert _matches_rendering(ink, f"{expr} = ?")
        assert str(eval(expr, {"__builtins__": {}})) == case["answer"]
        checked += 1
    assert checked == PER_TASK


def test_image_open_ended_caption(suite: dict[str, Path]) -> None:
    pattern = r"A (\w+) (\w+) is (to the left of|to the right of|above|below) a (\w+) (\w+) on a ([\w ]+) background\."
    for case in _cases(suite, "open-ended", "image"):
        c1, s1, rel, c2, s2, bg = re.fullmatch(pattern, case["answer"]).groups()
        img = _image(case["media"])
        objects = _objects(img)
        assert sorted((c, s) for c, s, _ in objects) == sorted([(c1, s1), (c2, s2)])
        (x1, y1), (x2, y2) = (_centroid(next(m for c, _, m in objects if c == col)) for col in (c1, c2))
        dx, dy = x1 - x2, y1 - y2
        expected = {"to the left of": -dx, "to the right of": dx, "above": -dy, "below": dy}[rel]
        assert expected > 0 and expected >= abs(dy if rel.startswith("to") else dx)
        assert (img[0, 0] == BACKGROUNDS[bg]).all() or (img[-1, -1] == BACKGROUNDS[bg]).all()


def test_image_spatial_grounding_box_is_exact(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "spatial grounding", "image"):
        colour, shape = re.fullmatch(r"Locate the (\w+) (\w+) in the image.*", case["question"]).groups()
        img = _image(case["media"])
        h, w = img.shape[:2]
        matches = [m for c, s, m in _objects(img) if (c, s) == (colour, shape)]
        assert len(matches) == 1
        assert json.loads(case["answer"]) == {"boxes": _norm(_px_box(matches[0]), w, h)}


def _check_points(answer: dict[str, Any], mask: np.ndarray, objects: np.ndarray) -> None:
    h, w = mask.shape
    assert len(answer["positive_points"]) == 3 and len(answer["negative_points"]) == 3
    for p in answer["positive_points"]:
        assert mask[_pixel(p, w, h)[::-1]], p
    for p in answer["negative_points"]:
        assert not objects[_pixel(p, w, h)[::-1]], p


def test_image_segmentation_mask_box_and_points(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "segmentation", "image"):
        colour, shape = re.fullmatch(r"Segment the (\w+) (\w+) in the image\.", case["question"]).groups()
        img = _image(case["media"])
        h, w = img.shape[:2]
        objects = _objects(img)
        target = [m for c, s, m in objects if c == colour]
        assert len(target) == 1 and _shape(target[0]) == shape
        answer = json.loads(case["answer"])
        assert answer["boxes"] == _norm(_px_box(target[0]), w, h)
        _check_points(answer, target[0], np.any([m for _, _, m in objects], axis=0))
        if case["split"] == "eval":
            r = case["record"]
            assert r["resolution"] == {"width": w, "height": h}
            assert isinstance(r["segmentation_output"]["counts"], str)
            assert np.array_equal(mask_utils.decode(r["segmentation_output"]).astype(bool), target[0])


# ---------------------------------------------------------------- video ground truth


def _presence(frames: np.ndarray, colour: str, min_px: int = 20) -> np.ndarray:
    return np.array([_present(f, colour).sum() >= min_px for f in frames])


def test_video_multiple_choice(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "multiple choice", "video"):
        frames, _ = _video(case["media"])
        chosen = _option(case)
        if m := re.fullmatch(r"In which direction does the (\w+) (\w+) move\?", case["question"]):
            (x0, y0), (x1, y1) = (_centroid(_present(f, m.group(1))) for f in (frames[0], frames[-1]))
            dx, dy = x1 - x0, y1 - y0
            moved = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
            assert moved == chosen and max(abs(dx), abs(dy)) > 20
        else:
            assert re.fullmatch(r"What colour does the (\w+) turn into\?", case["question"])
            last = _present(frames[-1], chosen)
            assert last.sum() > 50 and _present(frames[0], chosen).sum() == 0
            before = frames[0][last]  # the same pixels at the start: one other option colour
            starts = [
                o[3:] for o in case["options"] if _colour_mask(before, COLOURS[o[3:]], VIDEO_TOL).mean() > 0.9
            ]
            assert len(starts) == 1 and starts[0] != chosen


def test_video_numerical_counts_distinct_appearances(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "numerical", "video"):
        colour = re.fullmatch(r"How many (\w+) \w+s appear in the video\?", case["question"]).group(1)
        frames, _ = _video(case["media"])
        union = np.any([_present(f, colour) for f in frames], axis=0)
        assert len(_components(union, min_px=40)) == int(case["answer"])


def test_video_regression_duration(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "regression", "video"):
        colour = re.fullmatch(r"For how many seconds is the (\w+) \w+ visible.*", case["question"]).group(1)
        frames, fps = _video(case["media"])
        present = _presence(frames, colour)
        first, last = np.flatnonzero(present)[[0, -1]]
        assert present[first : last + 1].all()
        assert float(case["answer"]) == pytest.approx(present.sum() / fps, abs=1e-6)


def _span(frames: np.ndarray, fps: float, colour: str) -> tuple[float, float]:
    present = np.flatnonzero(_presence(frames, colour))
    return present[0] / fps, present[-1] / fps


def _tiou(a: list[float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_video_temporal_grounding_span(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "temporal grounding", "video"):
        colour = re.fullmatch(r"During which time span is the (\w+) \w+ visible.*", case["question"]).group(1)
        frames, fps = _video(case["media"])
        gt = json.loads(case["answer"])["time"]
        assert gt == pytest.approx(list(_span(frames, fps, colour)), abs=1e-6)
        assert _tiou(gt, _span(frames, fps, colour)) == pytest.approx(1.0)
        assert 0 < gt[0] < gt[1] < (len(frames) - 1) / fps


def _check_box(frame: np.ndarray, colour: str, box: list[int]) -> None:
    """The box centre shows the colour; every edge is within 2 px of the decoded object's box."""
    h, w = frame.shape[:2]
    cx, cy = _pixel([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], w, h)
    assert _colour_mask(frame[cy, cx], COLOURS[colour], VIDEO_TOL), (colour, frame[cy, cx])
    seen = _px_box(_colour_mask(frame, COLOURS[colour], VIDEO_TOL))
    gt = (box[0] * w / 1000, box[1] * h / 1000, box[2] * w / 1000, box[3] * h / 1000)
    assert np.abs(np.subtract(seen, gt)).max() <= 2.5, (seen, gt)


def test_video_spatial_temporal_grounding(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "spatial-temporal grounding", "video"):
        colour = re.fullmatch(r"When is the (\w+) \w+ visible.*", case["question"]).group(1)
        frames, fps = _video(case["media"])
        answer = json.loads(case["answer"])
        s, e = answer["time"]
        assert answer["time"] == pytest.approx(list(_span(frames, fps, colour)), abs=1e-6)
        assert list(answer["boxes"]) == [str(k) for k in range(math.ceil(s), math.floor(e) + 1)]
        for k, box in answer["boxes"].items():
            _check_box(frames[int(k) * int(fps)], colour, box)


def test_video_tracking(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "tracking", "video"):
        first = json.loads(re.search(r"(\[.*\])", case["question"]).group(1))
        frames, fps = _video(case["media"])
        h, w = frames.shape[1:3]
        cx, cy = _pixel([(first[0] + first[2]) / 2, (first[1] + first[3]) / 2], w, h)
        colour = min(COLOURS, key=lambda c: np.abs(frames[0][cy, cx].astype(int) - COLOURS[c]).max())
        _check_box(frames[0], colour, first)
        boxes = json.loads(case["answer"])["boxes"]
        assert list(boxes) == [str(k) for k in range(1, min(32, (len(frames) - 1) // int(fps)) + 1)]
        for k, box in boxes.items():
            _check_box(frames[int(k) * int(fps)], colour, box)


def test_video_segmentation(suite: dict[str, Path]) -> None:
    for case in _cases(suite, "segmentation", "video"):
        colour = re.fullmatch(r"Segment the (\w+) \w+ in the video\.", case["question"]).group(1)
        frames, fps = _video(case["media"])
        h, w = frames.shape[1:3]
        answer = json.loads(case["answer"])
        key = frames[answer["time"] * int(fps)]
        _check_box(key, colour, answer["boxes"])
        seen = _colour_mask(key, COLOURS[colour], VIDEO_TOL)
        objects = np.any([_colour_mask(key, rgb, VIDEO_TOL) for rgb in COLOURS.values()], axis=0)
        _check_points(answer, _erode(seen), objects)
        if case["split"] != "eval":
            continue
        r = case["record"]
        assert r["resolution"] == {"width": w, "height": h} and r["fps"] == fps
        rles = r["segmentation_output"]
        assert list(rles) == [str(i) for i in range(len(frames))]
        for i, frame in enumerate(frames):
            gt = mask_utils.decode(rles[str(i)]).astype(bool)
            seen = _colour_mask(frame, COLOURS[colour], VIDEO_TOL)
            if not gt.any():
                assert _present(frame, colour).sum() == 0
                continue
            assert (gt & seen).sum() / (gt | seen).sum() >= 0.8
        key_mask = mask_utils.decode(rles[str(answer["time"] * int(fps))]).astype(bool)
        assert answer["boxes"] == _norm(_px_box(key_mask), w, h)
        _check_points(answer, key_mask, objects)


def test_video_ocr_words_in_order(suite: dict[str, Path]) -> None:
    """Each run of frames with text shows one word, matching a fresh rendering better than any other word."""
    for case in _cases(suite, "OCR", "video"):
        frames, _ = _video(case["media"])
        ink = frames.mean(axis=-1) < 128  # dark text on a light background
        shown = ink.reshape(len(frames), -1).sum(axis=1) > 20
        starts = np.flatnonzero(shown & ~np.r_[False, shown[:-1]])
        ends = np.flatnonzero(shown & ~np.r_[shown[1:], False])
        words = case["answer"].split(" ")
        assert len(starts) == len(words) and len(set(words)) == len(words)
        for start, end, word in zip(starts, ends, words):
            x0, y0, x1, y1 = _px_box(ink[(start + end) // 2])
            crop = ink[(start + end) // 2][y0:y1, x0:x1]
            scores = {w: max(_mask_iou(crop, _ink_render(w, s)) for s in range(16, 37)) for w in WORDS}
            assert scores[word] >= 0.9 and max(scores, key=scores.get) == word, word


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    return float((a & b).sum() / (a | b).sum())


def test_video_open_ended_caption(suite: dict[str, Path]) -> None:
    move = r"A (\w+) (\w+) moves from the (\w+) to the (\w+) while a (\w+) (\w+) stays still\."
    change = r"A (\w+) changes colour from (\w+) to (\w+) while a (\w+) (\w+) stays still\."
    for case in _cases(suite, "open-ended", "video"):
        frames, _ = _video(case["media"])
        h, w = frames.shape[1:3]
        if m := re.fullmatch(move, case["answer"]):
            colour, _, start, end, still, _ = m.groups()
            (x0, y0), (x1, y1) = (_centroid(_present(f, colour)) for f in (frames[0], frames[-1]))
            side = {"left": x0 < w / 2, "right": x0 > w / 2, "top": y0 < h / 2, "bottom": y0 > h / 2}
            end_side = {"left": x1 < w / 2, "right": x1 > w / 2, "top": y1 < h / 2, "bottom": y1 > h / 2}
            assert side[start] and end_side[end]
        else:
            _, c0, c1, still, _ = re.fullmatch(change, case["answer"]).groups()
            assert _present(frames[0], c0).sum() > 50 and _present(frames[0], c1).sum() == 0
            assert _present(frames[-1], c1).sum() > 50 and _present(frames[-1], c0).sum() == 0
        a, b = (_centroid(_present(f, still)) for f in (frames[0], frames[-1]))
        assert np.allclose(a, b, atol=1.0)
