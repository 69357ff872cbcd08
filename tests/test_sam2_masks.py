"""SAM2 masks for segmentation answers: prompt parsing, key frames, tiny-SAM2 prediction, frame reading."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.media import MediaError, read_frames, read_image
from lightning_modules.eval.sam2_masks import (
    MaskPredictor,
    Sam2MaskPredictor,
    SegmentationPrompt,
    key_frame_index,
    parse_segmentation_prompt,
    predict_masks,
    sam2_prompt_inputs,
    tiny_sam2,
    to_pixels,
)
from tests.conftest import BAR_STEP, BAR_WIDTH, write_bar_video

W, H = 200, 100
BOX = [100, 200, 300, 400]
POS = [[500, 500], [250, 750], [1000, 0]]
NEG = [[0, 0], [900, 100], [10, 990]]
# The same at W=200, H=100 (x·W/1000, y·H/1000), worked by hand.
BOX_PX = [20.0, 20.0, 60.0, 40.0]
POS_PX = [[100.0, 50.0], [50.0, 75.0], [200.0, 0.0]]
NEG_PX = [[0.0, 0.0], [180.0, 10.0], [2.0, 99.0]]


def answer(**overrides: object) -> str:
    obj: dict = {"boxes": BOX, "positive_points": POS, "negative_points": NEG}
    obj.update(overrides)
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


# ---------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------


def test_to_pixels_points_and_boxes() -> None:
    assert to_pixels([500, 250], 640, 480) == [320.0, 120.0]
    assert to_pixels([100, 200, 300, 400], 200, 100) == [20.0, 20.0, 60.0, 40.0]
    assert to_pixels([[1000, 1000], [0, 500]], 30, 10) == [[30.0, 10.0], [0.0, 5.0]]
    out = to_pixels([1, 3], 3, 7)
    assert out == pytest.approx([0.003, 0.021]) and all(type(v) is float for v in out)
    with pytest.raises(ValueError):
        to_pixels([1, 2, 3], 10, 10)


@pytest.mark.parametrize(
    ("t", "fps", "n", "expected"),
    [
        (1.3, 2.0, 10, 3),  # round(2.6)
        (0, 2, 10, 0),
        (4.4, 1, 10, 4),
        (1.25, 2, 10, 2),  # round(2.5) = 2: Python's half-to-even
        (1.75, 2, 10, 4),  # round(3.5) = 4
        (100.0, 2.0, 10, 9),  # clamped to T-1
        (-3.0, 2.0, 10, 0),  # clamped to 0
        (4.4, 30, 1, 0),
        (np.float32(1.5), 2, 10, 3),
        (1e308, 1e308, 10, 9),  # finite inputs, overflowing product
        (-1e308, 1e308, 10, 0),
        (float("nan"), 2.0, 10, 0),
        (float("inf"), 2.0, 10, 0),
        (float("-inf"), 2.0, 10, 0),
        (None, 2.0, 10, 0),
        ("1.5", 2.0, 10, 0),
        (True, 2.0, 10, 0),
        ([1], 2.0, 10, 0),
        (3.0, 0.0, 10, 0),
        (3.0, -2.0, 10, 0),
        (3.0, float("nan"), 10, 0),
        (3.0, None, 10, 0),
        (3.0, 2.0, 0, 0),
    ],
)
def test_key_frame_index(t: object, fps: object, n: int, expected: int) -> None:
    k = key_frame_index(t, fps, n)
    assert k == expected and type(k) is int


# ---------------------------------------------------------------------------------------------------------
# parse_segmentation_prompt
# ---------------------------------------------------------------------------------------------------------


def test_parse_image_answer_to_pixels() -> None:
    p = parse_segmentation_prompt(answer(), W, H, "image")
    assert p == SegmentationPrompt(BOX_PX, POS_PX, NEG_PX, None)


def test_parse_video_answer_with_time_and_tags() -> None:
    response = f"<think>the dog</think>< answer >{answer(time=2.5)}< / answer >"
    p = parse_segmentation_prompt(response, W, H, "video")
    assert p == SegmentationPrompt(BOX_PX, POS_PX, NEG_PX, 2.5)
    # An image answer ignores a time; numbers given as strings count, as in the reward.
    p = parse_segmentation_prompt(answer(time=2.5, boxes=["100", 200, 300, "400"]), W, H, "image")
    assert p is not None and p.time is None and p.box == BOX_PX


@pytest.mark.parametrize(
    "box",
    [
        ...,
        None,
        [300, 200, 100, 400],
        [100, 400, 300, 200],
        [100, 200, 100, 400],
        [1, 2, 3],
        "x",
        [[1, 2, 3, 4]],
        [1100, 0, 1200, 500],
        [100, 200, "nan", 400],
        [100, 200, 10**400, 400],
    ],
)
def test_parse_invalid_box_keeps_points(box: object) -> None:
    p = parse_segmentation_prompt(answer(boxes=box), W, H, "image")
    assert p == SegmentationPrompt(None, POS_PX, NEG_PX, None)


def test_parse_clips_to_image() -> None:
    ans = answer(boxes=[-100, 0, 500, 1200], positive_points=[[-50, 1100], [500, 500], [2000, -1]])
    p = parse_segmentation_prompt(ans, W, H, "image")
    assert p is not None
    assert p.box == [0.0, 0.0, 100.0, 100.0]
    assert p.positive == [[0.0, 100.0], [100.0, 50.0], [200.0, 0.0]]


@pytest.mark.parametrize(
    ("text", "data_type"),
    [
        ("", "image"),
        ("hello", "image"),
        ("{", "image"),
        ("[1, 2, 3]", "image"),
        ('"boxes"', "image"),
        ("null", "image"),
        ("42", "video"),
        (answer(positive_points=POS[:2]), "image"),
        (answer(negative_points=NEG + [[1, 1]]), "image"),
        (answer(negative_points=...), "image"),
        (answer(positive_points=[[1, 2, 3], [4, 5], [6, 7]]), "image"),
        (answer(positive_points=[[1, "a"], [4, 5], [6, 7]]), "image"),
        (answer(positive_points=[[1, float("nan")], [4, 5], [6, 7]]), "image"),
        (answer(negative_points=[[1, 1e999], [4, 5], [6, 7]]), "image"),
        (answer(positive_points={"a": 1}), "image"),
        (answer(), "video"),  # no time
        (answer(time="2"), "video"),
        (answer(time=True), "video"),
        (answer(time=None), "video"),
        (answer(time=[1, 2]), "video"),
        (answer(time=float("nan")), "video"),
        (answer(time=float("inf")), "video"),
        ("{'boxes': [1, 2, 3, 4]}", "image"),
    ],
)
def test_parse_unusable_gives_none(text: str, data_type: str) -> None:
    assert parse_segmentation_prompt(text, W, H, data_type) is None


def test_parse_lenient_only_when_asked() -> None:
    single = answer(time=1).replace('"', "'")
    fenced = "```json\n" + answer() + "\n```"
    assert parse_segmentation_prompt(single, W, H, "video") is None
    assert parse_segmentation_prompt(fenced, W, H, "image") is None
    assert parse_segmentation_prompt(single, W, H, "video", lenient=True) == SegmentationPrompt(
        BOX_PX, POS_PX, NEG_PX, 1.0
    )
    assert parse_segmentation_prompt(fenced, W, H, "image", lenient=True) == SegmentationPrompt(
        BOX_PX, POS_PX, NEG_PX
    )


def test_parse_non_string_and_bad_arguments() -> None:
    assert parse_segmentation_prompt(None, W, H, "image") is None  # type: ignore[arg-type]
    assert parse_segmentation_prompt(123, W, H, "image") is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_segmentation_prompt(answer(), W, H, "audio")
    with pytest.raises(ValueError):
        parse_segmentation_prompt(answer(), 0, H, "image")


def _check_prompt(p: SegmentationPrompt | None, data_type: str) -> None:
    if p is None:
        return
    assert len(p.positive) == 3 and len(p.negative) == 3
    coords = [c for pt in p.positive + p.negative for c in pt] + (p.box or [])
    assert all(isinstance(c, float) and math.isfinite(c) for c in coords)
    assert all(0 <= x <= W and 0 <= y <= H for x, y in zip(coords[::2], coords[1::2]))
    if p.box is not None:
        assert p.box[0] < p.box[2] and p.box[1] < p.box[3]
    assert (p.time is not None and math.isfinite(p.time)) if data_type == "video" else p.time is None


scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([10**400, -1, 0, 1000, 1e308, -1e308]),
    st.text(max_size=6),
    st.sampled_from(["12", "nan", "inf", "-0", "1e999"]),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
    max_leaves=10,
)
points = st.lists(st.lists(scalars, max_size=3), max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    box=json_values | st.lists(scalars, min_size=4, max_size=4),
    pos=points | json_values,
    neg=points,
    time=scalars,
    data_type=st.sampled_from(["image", "video"]),
    wrap=st.sampled_from(["{}", "<think>x</think><answer>{}</answer>", "<answer>{}", "{} trailing"]),
)
def test_parse_fuzz_json_never_raises(
    box: object, pos: object, neg: object, time: object, data_type: str, wrap: str
) -> None:
    text = json.dumps({"boxes": box, "positive_points": pos, "negative_points": neg, "time": time})
    _check_prompt(parse_segmentation_prompt(wrap.format(text), W, H, data_type), data_type)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200), data_type=st.sampled_from(["image", "video"]))
def test_parse_fuzz_text_never_raises(text: str, data_type: str) -> None:
    _check_prompt(parse_segmentation_prompt(text, W, H, data_type), data_type)


def test_parse_fuzz_mutated_answers() -> None:
    rng = random.Random(0)
    base = f"<think>t</think><answer>{answer(time=3)}</answer>"
    alphabet = '{}[],:"0123456789.-e <>/abtimeNaInfy'
    parsed = 0
    for _ in range(300):
        s = list(base)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(s))
            op = rng.random()
            if op < 0.4:
                del s[i]
            elif op < 0.7:
                s.insert(i, rng.choice(alphabet))
            else:
                s[i] = rng.choice(alphabet)
        for data_type in ("image", "video"):
            p = parse_segmentation_prompt("".join(s), W, H, data_type)
            _check_prompt(p, data_type)
            parsed += p is not None
    assert 0 < parsed < 600  # some mutations survive, most do not


def test_sam2_prompt_inputs_nesting_and_labels() -> None:
    p = SegmentationPrompt([1, 2, 3, 4], [[5, 6], [7, 8], [9, 10]], [[11, 12], [13, 14], [15, 16]], 1.0)
    points, labels, boxes = sam2_prompt_inputs(p)
    assert points == [[[[5.0, 6.0], [7.0, 8.0], [9.0, 10.0], [11.0, 12.0], [13.0, 14.0], [15.0, 16.0]]]]
    assert labels == [[[1, 1, 1, 0, 0, 0]]]
    assert boxes == [[[1.0, 2.0, 3.0, 4.0]]]
    assert sam2_prompt_inputs(SegmentationPrompt(None, [[5, 6]], [])) == ([[[[5.0, 6.0]]]], [[[1]]], None)
    assert sam2_prompt_inputs(SegmentationPrompt([1, 2, 3, 4])) == (None, None, [[[1.0, 2.0, 3.0, 4.0]]])


# ---------------------------------------------------------------------------------------------------------
# Sam2MaskPredictor on a tiny random SAM2
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple:
    return tiny_sam2(seed=0)


@pytest.fixture()
def predictor(tiny: tuple) -> Sam2MaskPredictor:
    return Sam2MaskPredictor.from_models(*tiny)


IMG_W, IMG_H = 80, 48
PROMPT = SegmentationPrompt(
    box=[8.0, 9.6, 40.0, 38.4],
    positive=[[20.0, 24.0], [24.0, 19.2], [28.0, 28.8]],
    negative=[[4.0, 2.4], [72.0, 43.2], [76.0, 4.8]],
    time=1.3,
)


def _image(h: int = IMG_H, w: int = IMG_W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tiny_sam2_is_small_eval_and_seeded() -> None:
    a, _, va, vp = tiny_sam2(seed=0)
    b, _, _, _ = tiny_sam2(seed=0)
    c, _, _, _ = tiny_sam2(seed=1)
    assert not a.training and not va.training
    assert sum(p.numel() for p in a.parameters()) < 1_000_000
    assert sum(p.numel() for p in va.parameters()) < 2_000_000
    assert vp.video_processor.size["height"] == a.config.prompt_encoder_config.image_size == 64
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_image_mask_shape_dtype_and_prompt_reaching_the_model(
    predictor: Sam2MaskPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = predictor.image_model
    seen: dict = {}
    forward = model.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    mask = predictor.image_mask(_image(), PROMPT)
    assert mask.shape == (IMG_H, IMG_W) and mask.dtype == np.bool_
    assert seen["multimask_output"] is False
    # Pixels rescaled to the 64×64 model input: x·64/80, y·64/48.
    expected_points = [[[[16, 32], [19.2, 25.6], [22.4, 38.4], [3.2, 3.2], [57.6, 57.6], [60.8, 6.4]]]]
    torch.testing.assert_close(seen["input_points"], torch.tensor(expected_points))
    assert seen["input_labels"].tolist() == [[[1, 1, 1, 0, 0, 0]]]
    torch.testing.assert_close(seen["input_boxes"], torch.tensor([[[6.4, 12.8, 32, 51.2]]]))
    assert seen["pixel_values"].shape == (1, 3, 64, 64)
    again = predictor.image_mask(_image(), PROMPT)
    assert np.array_equal(mask, again)


def test_image_mask_odd_sizes_and_empty_prompt(predictor: Sam2MaskPredictor) -> None:
    for h, w in [(3, 5), (37, 53), (64, 64)]:
        m = predictor.image_mask(_image(h, w, seed=h), SegmentationPrompt([0, 0, w / 2, h / 2], [[1, 1]], []))
        assert m.shape == (h, w) and m.dtype == np.bool_
    assert not predictor.image_mask(_image(), SegmentationPrompt(None)).any()
    with pytest.raises(TypeError):
        predictor.image_mask(_image().astype(np.float32), PROMPT)
    with pytest.raises(ValueError):
        predictor.image_mask(_image()[..., :2], PROMPT)


def test_image_mask_bfloat16_model(tiny: tuple) -> None:
    model = tiny_sam2(seed=0)[0].to(torch.bfloat16)
    p = Sam2MaskPredictor.from_models(model, tiny[1])
    assert p.dtype == torch.bfloat16
    m = p.image_mask(_image(), PROMPT)
    assert m.shape == (IMG_H, IMG_W) and m.dtype == np.bool_


def _spy_video(predictor: Sam2MaskPredictor, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    passes: list = []
    added: list = []
    model, processor = predictor.video_model, predictor.video_processor
    propagate, add = model.propagate_in_video_iterator, processor.add_inputs_to_inference_session

    def spy_propagate(session: object, start_frame_idx: int, reverse: bool = False, **kw: object):
        frames: list = []
        passes.append((start_frame_idx, reverse, frames))
        for out in propagate(session, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            frames.append(int(out.frame_idx))
            yield out

    def spy_add(**kwargs: object) -> object:
        added.append(kwargs)
        return add(**kwargs)

    monkeypatch.setattr(model, "propagate_in_video_iterator", spy_propagate)
    monkeypatch.setattr(processor, "add_inputs_to_inference_session", spy_add)
    return passes, added


@pytest.mark.parametrize("key", [2, 0, 4])
def test_video_masks_propagate_forward_then_backward(
    predictor: Sam2MaskPredictor, monkeypatch: pytest.MonkeyPatch, key: int
) -> None:
    t = 5
    frames = np.stack([_image(seed=i) for i in range(t)])
    passes, added = _spy_video(predictor, monkeypatch)
    masks = predictor.video_masks(frames, key, PROMPT)
    assert masks.shape == (t, IMG_H, IMG_W) and masks.dtype == np.bool_
    assert [(s, r) for s, r, _ in passes] == [(key, False), (key, True)]
    assert passes[0][2] == list(range(key, t))
    assert passes[1][2] == (list(range(key, -1, -1)) if key > 0 else [])  # transformers skips reverse from 0
    assert len(added) == 1 and added[0]["frame_idx"] == key and added[0]["obj_ids"] == 1
    assert added[0]["input_labels"] == [[[1, 1, 1, 0, 0, 0]]]
    assert added[0]["input_boxes"] == [[PROMPT.box]]


class _FakeVideoModel:
    """Yields, per visit, a mask logit map with row ``frame_idx`` positive (the key frame's second visit: all)."""

    def __init__(self, t: int, h: int, w: int) -> None:
        self.t, self.h, self.w = t, h, w
        self.calls: list = []

    def eval(self) -> _FakeVideoModel:
        return self

    def propagate_in_video_iterator(self, session: object, start_frame_idx: int, reverse: bool = False):
        self.calls.append((start_frame_idx, reverse))
        order = range(start_frame_idx, -1, -1) if reverse else range(start_frame_idx, self.t)
        for i in order:
            logits = torch.full((1, 1, self.h, self.w), -5.0)
            if reverse and i == start_frame_idx:
                logits.fill_(5.0)  # a second, different answer for the key frame
            else:
                logits[..., i, :] = 5.0
            yield SimpleNamespace(frame_idx=i, pred_masks=logits)


def test_video_masks_each_frame_once_from_its_first_visit(
    tiny: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    t, key = 6, 2
    fake = _FakeVideoModel(t, IMG_H, IMG_W)
    p = Sam2MaskPredictor.from_models(tiny[0], tiny[1], fake, tiny[3])
    post = p.video_processor.post_process_masks
    processed: list = []

    def spy_post(masks: list, **kw: object) -> object:
        processed.append(int(masks[0][0, 0].sum(dim=1).argmax()))  # the positive row = the frame visited
        return post(masks, **kw)

    monkeypatch.setattr(p.video_processor, "post_process_masks", spy_post)
    masks = p.video_masks(np.stack([_image(seed=i) for i in range(t)]), key, PROMPT)
    assert fake.calls == [(key, False), (key, True)]
    assert sorted(processed) == list(range(t))  # post-processed exactly once each
    for i in range(t):
        expected = np.zeros((IMG_H, IMG_W), dtype=bool)
        expected[i] = True
        assert np.array_equal(masks[i], expected), i


def test_video_masks_without_video_model(tiny: tuple) -> None:
    p = Sam2MaskPredictor.from_models(tiny[0], tiny[1])
    with pytest.raises(RuntimeError):
        p.video_masks(np.zeros((2, 8, 8, 3), np.uint8), 0, PROMPT)
    with pytest.raises(ValueError):
        Sam2MaskPredictor.from_models(*tiny).video_masks(np.zeros((2, 8, 8, 3), np.uint8), 2, PROMPT)


def test_constructor_is_lazy_and_checks_dtype() -> None:
    p = Sam2MaskPredictor("/nonexistent/sam2", device="cpu", dtype="bfloat16")
    assert p._image_model is None and p._video_model is None
    assert p.video_model_name_or_path == "/nonexistent/sam2" and p.dtype == torch.bfloat16
    assert isinstance(p, MaskPredictor)
    with pytest.raises(ValueError):
        Sam2MaskPredictor(dtype="float64")


# ---------------------------------------------------------------------------------------------------------
# predict_masks
# ---------------------------------------------------------------------------------------------------------


class _StubPredictor:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.keys = fail, []

    def image_mask(self, image: np.ndarray, prompt: SegmentationPrompt) -> np.ndarray:
        assert not self.fail, "must not be called"
        return np.ones(image.shape[:2], dtype=np.int64)

    def video_masks(self, frames: np.ndarray, key_frame: int, prompt: SegmentationPrompt) -> np.ndarray:
        assert not self.fail, "must not be called"
        self.keys.append(key_frame)
        return np.ones(frames.shape[:3], dtype=bool)


@pytest.mark.parametrize(
    "prompt",
    [
        None,
        SegmentationPrompt(None),
        SegmentationPrompt(None, time=1.0),
        SegmentationPrompt([1, 1, 5, 5], time=None),
    ],
)
def test_predict_masks_unusable_prompt_gives_empty(prompt: SegmentationPrompt | None) -> None:
    stub = _StubPredictor(fail=True)
    frames = np.zeros((4, 6, 7, 3), np.uint8)
    masks, ok = predict_masks(stub, frames, prompt, "video", fps=2.0)
    assert not ok and masks.shape == (4, 6, 7) and masks.dtype == np.bool_ and not masks.any()
    if prompt is None or prompt.empty:
        mask, ok = predict_masks(stub, frames[0], prompt, "image")
        assert not ok and mask.shape == (6, 7) and mask.dtype == np.bool_ and not mask.any()


def test_predict_masks_real_tiny_none_prompt(predictor: Sam2MaskPredictor) -> None:
    masks, ok = predict_masks(predictor, np.stack([_image(seed=i) for i in range(3)]), None, "video", fps=2.0)
    assert not ok and masks.shape == (3, IMG_H, IMG_W) and not masks.any()
    mask, ok = predict_masks(predictor, _image(), PROMPT, "image")
    assert ok and mask.shape == (IMG_H, IMG_W) and mask.dtype == np.bool_


@pytest.mark.parametrize(
    ("time", "fps", "key"), [(1.3, 2.0, 3), (100.0, 2.0, 9), (1.3, float("nan"), 0), (2.0, 1.0, 2)]
)
def test_predict_masks_video_key_frame(time: float, fps: float, key: int) -> None:
    stub = _StubPredictor()
    masks, ok = predict_masks(
        stub, np.zeros((10, 4, 5, 3), np.uint8), SegmentationPrompt([0, 0, 2, 2], time=time), "video", fps=fps
    )
    assert ok and stub.keys == [key] and masks.shape == (10, 4, 5) and masks.all()


def test_predict_masks_image_and_checks() -> None:
    mask, ok = predict_masks(_StubPredictor(), np.zeros((4, 5, 3), np.uint8), PROMPT, "image")
    assert ok and mask.dtype == np.bool_ and mask.shape == (4, 5) and mask.all()
    with pytest.raises(ValueError):
        predict_masks(_StubPredictor(), np.zeros((4, 5, 3), np.uint8), PROMPT, "video", fps=2.0)
    with pytest.raises(ValueError):
        predict_masks(_StubPredictor(), np.zeros((4, 5, 3), np.uint8), PROMPT, "audio")

    class Wrong(_StubPredictor):
        def image_mask(self, image: np.ndarray, prompt: SegmentationPrompt) -> np.ndarray:
            return np.ones((2, 2), bool)

    with pytest.raises(ValueError):
        predict_masks(Wrong(), np.zeros((4, 5, 3), np.uint8), PROMPT, "image")


# ---------------------------------------------------------------------------------------------------------
# Frames and images
# ---------------------------------------------------------------------------------------------------------


def _check_bar_frames(frames: np.ndarray, fps: float, n: int) -> None:
    assert frames.shape == (n, 32, 64, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(8.0)
    for i in range(n):  # frame i: a white bar over columns [4i, 4i + 16)
        bar = frames[i, :, i * BAR_STEP + 2 : i * BAR_STEP + BAR_WIDTH - 2]
        assert bar.mean() > 200, i
        far = (i * BAR_STEP + BAR_WIDTH + 24) % 64
        if not i * BAR_STEP - 4 <= far < i * BAR_STEP + BAR_WIDTH + 4:
            assert frames[i, :, far].mean() < 50, i


def test_read_frames_all_frames_native_fps(tmp_path: Path) -> None:
    path = tmp_path / "bar.mp4"
    write_bar_video(path, frames=12, fps=8, width=64, height=32)
    frames, fps = read_frames(path)
    _check_bar_frames(frames, fps, 12)


def test_read_frames_pyav_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decord

    path = tmp_path / "bar.mp4"
    write_bar_video(path, frames=12, fps=8, width=64, height=32)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("decord is broken")

    monkeypatch.setattr(decord, "VideoReader", broken)
    frames, fps = read_frames(str(path))
    _check_bar_frames(frames, fps, 12)


def test_read_frames_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        read_frames(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    with pytest.raises(MediaError, match="cannot decode"):
        read_frames(bad)


def test_read_image_rgb(tmp_path: Path) -> None:
    from PIL import Image

    rgb = _image(5, 7)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)
    Image.fromarray(np.full((3, 4), 77, np.uint8)).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "g.png"), np.full((3, 4, 3), 77, np.uint8))
    rgba = np.dstack([rgb, np.full((5, 7), 9, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "t.png")
    assert read_image(tmp_path / "t.png").shape == (5, 7, 3)
    (tmp_path / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(MediaError):
        read_image(tmp_path / "c.png")
    with pytest.raises(MediaError):
        read_image(tmp_path / "none.png")


def test_tiny_name_builds_offline_models_for_both_media():
    predictor = Sam2MaskPredictor("tiny", device="cpu")
    image = np.zeros((32, 48, 3), np.uint8)
    prompt = SegmentationPrompt([4.0, 4.0, 20.0, 20.0], [[8.0, 8.0]] * 3, [[40.0, 30.0]] * 3, 0.0)
    assert predictor.image_mask(image, prompt).shape == (32, 48)
    assert predictor.video_masks(np.zeros((3, 32, 48, 3), np.uint8), 1, prompt).shape == (3, 32, 48)
    assert predictor.device.type == "cpu" and Sam2MaskPredictor("tiny").device.type in ("cpu", "cuda")
