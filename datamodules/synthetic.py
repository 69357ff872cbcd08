"""Embedded synthetic suite: every OneThinker problem_type × data_type, procedurally drawn.

`generate_suite` writes PNG images and MP4 videos (coloured shapes and rendered words; in videos
objects move, appear, disappear or change colour) and the three official manifests of SPEC §2.
Ground truth is computed from the generator, so it is exact:

- coordinates are integers on the 0–1000 scale (x·1000/W, y·1000/H); a box is the tight pixel box
  of the object, end exclusive; a point is the centre of a pixel;
- a video frame ``i`` is at time ``i / fps`` (integer fps, constant frame rate);
- a time span is [first frame, last frame] in which the object is visible, in seconds; a duration
  (regression) is the number of visible frames divided by fps;
- the box of second ``k`` is the box at frame ``k · fps``.

RL ``problem`` starts with the ``<image>``/``<video>`` placeholder; evaluation ``problem`` is the bare
question (the media is ``path``), as in the released evaluation files. Every video evaluation
record has its native ``fps``. Evaluation records of segmentation carry ``resolution`` and COCO RLE
masks: one for an image, and for a video one per native frame, keyed "0", "1", ... (an empty RLE
where the object is not visible).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import synthetic_draw as D
from datamodules.prompts import sft_user_content
from datamodules.records import PLACEHOLDERS

SYNTHETIC_TASKS: tuple[tuple[str, str], ...] = (
    ("multiple choice", "image"),
    ("numerical", "image"),
    ("OCR", "image"),
    ("math", "image"),
    ("open-ended", "image"),
    ("spatial grounding", "image"),
    ("segmentation", "image"),
    ("multiple choice", "video"),
    ("numerical", "video"),
    ("regression", "video"),
    ("OCR", "video"),
    ("open-ended", "video"),
    ("temporal grounding", "video"),
    ("spatial-temporal grounding", "video"),
    ("tracking", "video"),
    ("segmentation", "video"),
)
SPLITS: tuple[str, ...] = ("rl", "sft", "eval")
DATA_SOURCE = "synthetic"
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (256, 192), (240, 320), (288, 288))
VIDEO_SIZES: tuple[tuple[int, int], ...] = ((192, 144), (224, 160), (256, 192), (320, 240))
VIDEO_FPS: tuple[int, ...] = (4, 5, 8)
WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "green", "light", "table", "house", "music", "paper",
    "tiger", "ocean", "bread", "chair", "plant", "smile", "train", "water", "field", "dream",
    "north", "south", "bird", "moon", "star", "lamp", "road", "snow", "fire", "wind",
    "gold", "leaf", "door", "book", "ship", "rain", "sand", "wolf", "bell", "kite",
)  # fmt: skip
LETTERS = "ABCD"


@dataclass
class Sample:
    """One generated problem: question, answer (inside the tags), chain of thought and media facts."""

    question: str
    answer: str
    think: str
    width: int
    height: int
    options: list[str] = field(default_factory=list)
    fps: int | None = None
    segmentation: Any = None
    frame_boxes: list[list[int]] | None = None  # tracking: per-frame xywh pixels (GOT-10k protocol)


Generator = Callable[[np.random.Generator, Path], Sample]


# ---------------------------------------------------------------- small helpers


def _choose(rng: np.random.Generator, items: tuple[str, ...] | list[str], k: int = 1) -> list[str]:
    """``k`` distinct items, in random order."""
    return [items[int(i)] for i in rng.permutation(len(items))[:k]]


def _one(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return _choose(rng, items)[0]


def _others(items: tuple[str, ...], *exclude: str) -> tuple[str, ...]:
    return tuple(x for x in items if x not in exclude)


def _num(x: float) -> int | float:
    """A JSON-friendly number: int when whole, else rounded to 3 decimals."""
    r = round(x, 3)
    return int(r) if r == int(r) else r


def _fmt(x: float) -> str:
    return str(_num(x))


def _dumps(obj: Any) -> str:
    return json.dumps(obj)


def _mc_options(
    rng: np.random.Generator, correct: str, pool: tuple[str, ...], must: tuple[str, ...] = ()
) -> tuple[list[str], str]:
    """Four options "A. x" holding ``correct`` (and ``must``), shuffled; returns them and the letter."""
    picks = [correct, *must]
    picks += _choose(rng, _others(pool, *picks), 4 - len(picks))
    order = [picks[int(i)] for i in rng.permutation(4)]
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(order)], LETTERS[order.index(correct)]


def _shape_mask(rng: np.random.Generator, shape: str, lo: int, hi: int) -> np.ndarray:
    """Sprite of a shape with a random size; squares and circles stay round."""
    w = int(rng.integers(lo, hi + 1))
    h = w if shape in ("square", "circle") else int(rng.integers(max(lo, int(w * 0.8)), int(w * 1.2) + 1))
    return D.shape_sprite(shape, w, h)


def _statics(
    rng: np.random.Generator,
    specs: list[tuple[str, str]],
    width: int,
    height: int,
    lo: int,
    hi: int,
    avoid: tuple[D.Box, ...] = (),
) -> list[D.Sprite]:
    """Static, non-overlapping sprites for (colour, shape) specs."""
    masks = [_shape_mask(rng, s, lo, hi) for _, s in specs]
    corners = D.place(rng, [m.shape[::-1] for m in masks], width, height, margin=4, avoid=avoid)
    return [D.still(m, c, x, y) for m, (c, _), (x, y) in zip(masks, specs, corners)]


def _distractor_specs(
    rng: np.random.Generator, n: int, colours: tuple[str, ...], shapes: tuple[str, ...] = D.SHAPES
) -> list[tuple[str, str]]:
    return [(_one(rng, colours), _one(rng, shapes)) for _ in range(n)]


def _image_frame(rng: np.random.Generator, light: bool = False) -> tuple[int, int, str]:
    w, h = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    return w, h, _one(rng, D.LIGHT_BACKGROUNDS if light else tuple(D.BACKGROUNDS))


def _video_frame(rng: np.random.Generator, min_width: int = 0) -> tuple[int, int, int, str]:
    sizes = [s for s in VIDEO_SIZES if s[0] >= min_width]
    w, h = sizes[int(rng.integers(len(sizes)))]
    return w, h, VIDEO_FPS[int(rng.integers(len(VIDEO_FPS)))], _one(rng, tuple(D.BACKGROUNDS))


def _save_image(path: Path, sprites: list[D.Sprite], w: int, h: int, bg: str) -> None:
    D.write_png(path, D.render(sprites, 0, w, h, D.BACKGROUNDS[bg]))


def _save_video(path: Path, sprites: list[D.Sprite], n: int, w: int, h: int, bg: str, fps: int) -> None:
    base = D.yuv420_background(w, h, D.BACKGROUNDS[bg])
    D.write_mp4(path, (D.render_yuv420(sprites, i, base) for i in range(n)), fps)


def _centre(box: D.Box, w: int, h: int) -> list[int]:
    x0, y0, x1, y1 = D.norm_box(box, w, h)
    return [(x0 + x1) // 2, (y0 + y1) // 2]


def _linear_path(
    rng: np.random.Generator, mask: np.ndarray, w: int, h: int, f0: int, f1: int
) -> list[tuple[int, int, int]]:
    """Waypoints of a straight move between two random in-frame positions."""
    mh, mw = mask.shape
    xs, ys = rng.integers(0, w - mw + 1, size=2), rng.integers(0, h - mh + 1, size=2)
    return [(f0, int(xs[0]), int(ys[0])), (f1, int(xs[1]), int(ys[1]))]


def _span(rng: np.random.Generator, n: int, fps: int) -> tuple[int, int]:
    """A visible frame range [a, b] of at least one second that starts and ends inside the video."""
    a = int(rng.integers(1, n - 2 * fps))
    b = int(rng.integers(a + fps, n - 1))
    return a, b


# ---------------------------------------------------------------- image tasks


def image_multiple_choice(rng: np.random.Generator, path: Path) -> Sample:
    """The colour of the only shape of a kind, or the shape of the only object of a colour."""
    w, h, bg = _image_frame(rng)
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    n = int(rng.integers(1, 4))
    if rng.integers(2) == 0:
        specs = [(colour, shape), *_distractor_specs(rng, n, tuple(D.COLOURS), _others(D.SHAPES, shape))]
        question, (options, letter) = (
            f"What colour is the {shape}?",
            _mc_options(rng, colour, tuple(D.COLOURS)),
        )
        think = f"There is one {shape} in the image and it is {colour}, so the answer is option {letter}."
    else:
        specs = [(colour, shape), *_distractor_specs(rng, n, _others(tuple(D.COLOURS), colour))]
        question, (options, letter) = f"What shape is the {colour} object?", _mc_options(rng, shape, D.SHAPES)
        think = f"The only {colour} object in the image is a {shape}, so the answer is option {letter}."
    _save_image(path, _statics(rng, specs, w, h, 22, 56), w, h, bg)
    return Sample(question, letter, think, w, h, options=options)


def image_numerical(rng: np.random.Generator, path: Path) -> Sample:
    """Count the shapes of one colour (all of them share one shape)."""
    w, h, bg = _image_frame(rng)
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    k = int(rng.integers(1, 7))
    specs = [(colour, shape)] * k + _distractor_specs(
        rng, int(rng.integers(1, 5)), _others(tuple(D.COLOURS), colour)
    )
    _save_image(path, _statics(rng, specs, w, h, 20, 40), w, h, bg)
    think = f"I look for {colour} {shape}s and count them one by one: there are {k}."
    return Sample(f"How many {colour} {shape}s are there in the image?", str(k), think, w, h)


def image_ocr(rng: np.random.Generator, path: Path) -> Sample:
    """Read one to three rendered words."""
    w, h, bg = _image_frame(rng, light=True)
    size, ink = int(rng.choice([20, 24, 28, 32])), _one(rng, tuple(D.TEXT_COLOURS))
    words = _choose(rng, WORDS, int(rng.integers(1, 4)))
    while D.text_sprite(" ".join(words), size).shape[1] > w - 8:
        words = words[:-1]
    text = " ".join(words)
    sprite = D.text_sprite(text, size)
    x, y = D.place(rng, [sprite.shape[::-1]], w, h)[0]
    sprites = [D.still(sprite, ink, x, y, D.TEXT_COLOURS)]
    sprites += _statics(rng, _distractor_specs(rng, int(rng.integers(0, 3)), tuple(D.COLOURS)), w, h, 16, 28,
                        avoid=((x, y, x + sprite.shape[1], y + sprite.shape[0]),))  # fmt: skip
    _save_image(path, sprites, w, h, bg)
    think = f'The image shows {len(words)} word(s) written in {ink}: "{text}".'
    return Sample("What text is written in the image?", text, think, w, h)


def _expression(rng: np.random.Generator) -> str:
    a, b, c = (int(v) for v in rng.integers(2, 20, size=3))
    forms = (
        f"{a} + {b}",
        f"{a + b} - {b}",
        f"{a} * {b}",
        f"{a} + {b} * {c}",
        f"({a} + {b}) * {c}",
        f"{a} * {b} - {c}",
    )
    return forms[int(rng.integers(len(forms)))]


def image_math(rng: np.random.Generator, path: Path) -> Sample:
    """Evaluate an arithmetic expression rendered in the image."""
    w, h, bg = _image_frame(rng, light=True)
    expr, size, ink = _expression(rng), int(rng.choice([24, 28, 32])), _one(rng, tuple(D.TEXT_COLOURS))
    value = int(eval(expr, {"__builtins__": {}}))  # our own generated arithmetic
    while D.text_sprite(f"{expr} = ?", size).shape[1] > w - 8:
        size -= 4
    sprite = D.text_sprite(f"{expr} = ?", size)
    x, y = D.place(rng, [sprite.shape[::-1]], w, h)[0]
    _save_image(path, [D.still(sprite, ink, x, y, D.TEXT_COLOURS)], w, h, bg)
    think = f"The image shows the expression {expr}. Evaluating it step by step gives {value}."
    return Sample("What is the value of the expression shown in the image?", str(value), think, w, h)


def _relation(a: D.Box, b: D.Box) -> str | None:
    """Where box a lies relative to box b, when one axis clearly dominates."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    if abs(dx) >= 2 * abs(dy) and abs(dx) >= 20:
        return "to the left of" if dx < 0 else "to the right of"
    if abs(dy) >= 2 * abs(dx) and abs(dy) >= 20:
        return "above" if dy < 0 else "below"
    return None


def image_open_ended(rng: np.random.Generator, path: Path) -> Sample:
    """Caption of two shapes and their spatial relation."""
    w, h, bg = _image_frame(rng)
    (c1, c2), (s1, s2) = _choose(rng, tuple(D.COLOURS), 2), _choose(rng, D.SHAPES, 2)
    for _ in range(200):
        sprites = _statics(rng, [(c1, s1), (c2, s2)], w, h, 30, 60)
        rel = _relation(sprites[0].box(0), sprites[1].box(0))
        if rel:
            break
    else:
        raise RuntimeError("no clear spatial relation found")
    _save_image(path, sprites, w, h, bg)
    caption = f"A {c1} {s1} is {rel} a {c2} {s2} on a {bg} background."
    think = f"I see a {c1} {s1} and a {c2} {s2} on a {bg} background; the {s1} is {rel} the {s2}."
    return Sample("Describe the image in one sentence.", caption, think, w, h)


def image_spatial_grounding(rng: np.random.Generator, path: Path) -> Sample:
    """Box of the one object matching colour and shape, among look-alikes."""
    w, h, bg = _image_frame(rng)
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    specs = [
        (colour, shape),
        (colour, _one(rng, _others(D.SHAPES, shape))),
        (_one(rng, _others(tuple(D.COLOURS), colour)), shape),
    ]
    specs += [
        (c, s)
        for c, s in _distractor_specs(rng, int(rng.integers(0, 3)), tuple(D.COLOURS))
        if (c, s) != (colour, shape)
    ]
    sprites = _statics(rng, specs, w, h, 24, 56)
    _save_image(path, sprites, w, h, bg)
    box = D.norm_box(sprites[0].box(0), w, h)
    think = f"The {colour} {shape} spans x {box[0]}–{box[2]} and y {box[1]}–{box[3]} on the 0–1000 scale."
    return Sample(
        f"Locate the {colour} {shape} in the image and give its bounding box.",
        _dumps({"boxes": box}),
        think,
        w,
        h,
    )


def _seg_answer(
    rng: np.random.Generator, target: D.Sprite, others: list[D.Sprite], i: int, w: int, h: int
) -> dict[str, Any]:
    """Box and 3 + 3 points of ``target`` at frame ``i``."""
    mask = target.frame_mask(i, w, h)
    occupied = mask.copy()
    for s in others:
        occupied |= s.frame_mask(i, w, h)
    box = target.box(i)
    pos, neg = D.segmentation_points(rng, mask, occupied, box)
    return {
        "boxes": D.norm_box(box, w, h),
        "positive_points": [D.norm_point(x, y, w, h) for x, y in pos],
        "negative_points": [D.norm_point(x, y, w, h) for x, y in neg],
    }


def image_segmentation(rng: np.random.Generator, path: Path) -> Sample:
    """Box, points and mask of the only object of a colour."""
    w, h, bg = _image_frame(rng)
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    specs = [
        (colour, shape),
        *_distractor_specs(rng, int(rng.integers(1, 4)), _others(tuple(D.COLOURS), colour)),
    ]
    sprites = _statics(rng, specs, w, h, 30, 64)
    _save_image(path, sprites, w, h, bg)
    answer = _seg_answer(rng, sprites[0], sprites[1:], 0, w, h)
    think = f"The {colour} {shape} lies in box {answer['boxes']}; I pick points inside it and on the background around it."
    question = f"Segment the {colour} {shape} in the image."
    return Sample(question, _dumps(answer), think, w, h, segmentation=D.rle(sprites[0].frame_mask(0, w, h)))


# ---------------------------------------------------------------- video tasks


def _directional_path(
    rng: np.random.Generator, mask: np.ndarray, w: int, h: int, n: int, direction: str
) -> list[tuple[int, int, int]]:
    """Move from the first quarter of the frame to the last quarter along one axis."""
    mh, mw = mask.shape
    room_x, room_y = w - mw, h - mh
    lo_x, hi_x = int(rng.integers(0, room_x // 4 + 1)), int(rng.integers(room_x * 3 // 4, room_x + 1))
    lo_y, hi_y = int(rng.integers(0, room_y // 4 + 1)), int(rng.integers(room_y * 3 // 4, room_y + 1))
    x, y = int(rng.integers(0, room_x + 1)), int(rng.integers(0, room_y + 1))
    start, end = {
        "right": ((lo_x, y), (hi_x, y)),
        "left": ((hi_x, y), (lo_x, y)),
        "down": ((x, lo_y), (x, hi_y)),
        "up": ((x, hi_y), (x, lo_y)),
    }[direction]
    return [(0, *start), (n - 1, *end)]


def _moving_target(
    rng: np.random.Generator,
    colour: str,
    shape: str,
    w: int,
    h: int,
    n: int,
    direction: str,
    lo: int = 24,
    hi: int = 36,
) -> D.Sprite:
    mask = _shape_mask(rng, shape, lo, hi)
    return D.Sprite(mask, [(0, colour)], _directional_path(rng, mask, w, h, n, direction))


def video_multiple_choice(rng: np.random.Generator, path: Path) -> Sample:
    """Direction of motion, or the new colour of a shape that changes colour."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(3, 7)) * fps
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    if rng.integers(2) == 0:
        direction = _one(rng, D.DIRECTIONS)
        target = _moving_target(rng, colour, shape, w, h, n, direction)
        question, (options, letter) = (
            f"In which direction does the {colour} {shape} move?",
            _mc_options(rng, direction, D.DIRECTIONS),
        )
        start, end = _centre(target.box(0), w, h), _centre(target.box(n - 1), w, h)
        think = f"The {colour} {shape} starts near {start} and ends near {end}, so it moves {direction}: option {letter}."
        shapes, used = D.SHAPES, (colour,)
    else:
        new = _one(rng, _others(tuple(D.COLOURS), colour))
        change = int(rng.integers(n // 3, 2 * n // 3 + 1))
        target = _statics(rng, [(colour, shape)], w, h, 26, 40)[0]
        target.colours.append((change, new))
        question, (options, letter) = (
            f"What colour does the {shape} turn into?",
            _mc_options(rng, new, tuple(D.COLOURS), (colour,)),
        )
        think = f"The {shape} is {colour} at first and turns {new} at about {_fmt(change / fps)} s: option {letter}."
        shapes, used = _others(D.SHAPES, shape), (colour, new)
    specs = _distractor_specs(rng, int(rng.integers(1, 3)), _others(tuple(D.COLOURS), *used), shapes)
    sprites = [*_statics(rng, specs, w, h, 20, 32, avoid=(D.path_box(target, n),)), target]
    _save_video(path, sprites, n, w, h, bg, fps)
    return Sample(question, letter, think, w, h, options=options, fps=fps)


def video_numerical(rng: np.random.Generator, path: Path) -> Sample:
    """Count the shapes of one colour that appear at some time in the video."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(4, 9)) * fps
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    k = int(rng.integers(1, 5))
    specs = [(colour, shape)] * k + _distractor_specs(
        rng, int(rng.integers(1, 4)), _others(tuple(D.COLOURS), colour)
    )
    sprites = _statics(rng, specs, w, h, 20, 30)
    for s in sprites[:k]:
        s.first = int(rng.integers(0, n - fps))
        s.last = int(rng.integers(s.first + fps - 1, n))
    _save_video(path, sprites, n, w, h, bg, fps)
    times = ", ".join(f"{_fmt(s.first / fps)} s" for s in sorted(sprites[:k], key=lambda s: s.first))
    think = f"{colour.capitalize()} {shape}s appear at {times}; that makes {k} in total."
    return Sample(f"How many {colour} {shape}s appear in the video?", str(k), think, w, h, fps=fps)


def video_regression(rng: np.random.Generator, path: Path) -> Sample:
    """How long an object stays visible."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(4, 10)) * fps
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    a, b = _span(rng, n, fps)
    mask = _shape_mask(rng, shape, 24, 36)
    target = D.Sprite(mask, [(0, colour)], _linear_path(rng, mask, w, h, a, b), first=a, last=b)
    specs = _distractor_specs(rng, int(rng.integers(1, 3)), _others(tuple(D.COLOURS), colour))
    sprites = [*_statics(rng, specs, w, h, 20, 30), target]
    _save_video(path, sprites, n, w, h, bg, fps)
    seconds = (b - a + 1) / fps
    think = f"The {colour} {shape} is visible in {b - a + 1} frames at {fps} frames per second, i.e. {_fmt(seconds)} seconds."
    return Sample(
        f"For how many seconds is the {colour} {shape} visible in the video?",
        _fmt(seconds),
        think,
        w,
        h,
        fps=fps,
    )


def video_ocr(rng: np.random.Generator, path: Path) -> Sample:
    """Read words shown one after another."""
    w, h, fps, _ = _video_frame(rng, min_width=224)
    bg, ink, size = (
        _one(rng, D.LIGHT_BACKGROUNDS),
        _one(rng, tuple(D.TEXT_COLOURS)),
        int(rng.choice([22, 26, 30])),
    )
    words = _choose(rng, WORDS, int(rng.integers(2, 4)))
    sprites, frame = [], int(rng.integers(0, fps // 2 + 1))
    for word in words:
        mask = D.text_sprite(word, size)
        x, y = D.place(rng, [mask.shape[::-1]], w, h)[0]
        length = int(rng.integers(fps, 2 * fps + 1))
        sprites.append(D.Sprite(mask, [(0, ink)], [(0, x, y)], frame, frame + length - 1, D.TEXT_COLOURS))
        frame += length + int(rng.integers(fps // 2, fps + 1))
    _save_video(path, sprites, frame, w, h, bg, fps)
    think = (
        "The video shows "
        + ", then ".join(f'"{wd}" at {_fmt(s.first / fps)} s' for wd, s in zip(words, sprites))
        + "."
    )
    return Sample("What words are shown in the video, in order?", " ".join(words), think, w, h, fps=fps)


_SIDES = {
    "right": ("left", "right"),
    "left": ("right", "left"),
    "down": ("top", "bottom"),
    "up": ("bottom", "top"),
}


def video_open_ended(rng: np.random.Generator, path: Path) -> Sample:
    """Caption: a shape crosses the frame or changes colour while another stays still."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(3, 7)) * fps
    (c, c2, c_new), (s, s2) = _choose(rng, tuple(D.COLOURS), 3), _choose(rng, D.SHAPES, 2)
    if rng.integers(2) == 0:
        direction = _one(rng, D.DIRECTIONS)
        target = _moving_target(rng, c, s, w, h, n, direction)
        start, end = _SIDES[direction]
        caption = f"A {c} {s} moves from the {start} to the {end} while a {c2} {s2} stays still."
    else:
        target = _statics(rng, [(c, s)], w, h, 26, 40)[0]
        target.colours.append((int(rng.integers(n // 3, 2 * n // 3 + 1)), c_new))
        caption = f"A {s} changes colour from {c} to {c_new} while a {c2} {s2} stays still."
    sprites = [*_statics(rng, [(c2, s2)], w, h, 24, 36, avoid=(D.path_box(target, n),)), target]
    _save_video(path, sprites, n, w, h, bg, fps)
    think = f"I follow the {s} from the first frame to the last and check the {c2} {s2}, which never moves."
    return Sample("Describe what happens in the video in one sentence.", caption, think, w, h, fps=fps)


def _appearing_scene(
    rng: np.random.Generator, w: int, h: int, n: int, fps: int, bg: str
) -> tuple[D.Sprite, list[D.Sprite], str, str]:
    """A moving target visible over a sub-span, above static distractors of other colours."""
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    a, b = _span(rng, n, fps)
    mask = _shape_mask(rng, shape, 24, 40)
    target = D.Sprite(mask, [(0, colour)], _linear_path(rng, mask, w, h, a, b), first=a, last=b)
    specs = _distractor_specs(rng, int(rng.integers(1, 4)), _others(tuple(D.COLOURS), colour))
    return target, [*_statics(rng, specs, w, h, 20, 32), target], colour, shape


def video_temporal_grounding(rng: np.random.Generator, path: Path) -> Sample:
    """The span in which an object is visible."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(5, 11)) * fps
    target, sprites, colour, shape = _appearing_scene(rng, w, h, n, fps, bg)
    _save_video(path, sprites, n, w, h, bg, fps)
    span = [_num(target.first / fps), _num(target.last / fps)]
    think = f"The {colour} {shape} first appears at {span[0]} s and is last seen at {span[1]} s."
    question = f"During which time span is the {colour} {shape} visible in the video?"
    return Sample(question, _dumps({"time": span}), think, w, h, fps=fps)


def video_spatial_temporal_grounding(rng: np.random.Generator, path: Path) -> Sample:
    """The span of an object and its box at every integer second inside it."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(5, 11)) * fps
    target, sprites, colour, shape = _appearing_scene(rng, w, h, n, fps, bg)
    _save_video(path, sprites, n, w, h, bg, fps)
    seconds = range(math.ceil(target.first / fps), target.last // fps + 1)
    boxes = {str(k): D.norm_box(target.box(k * fps), w, h) for k in seconds}
    span = [_num(target.first / fps), _num(target.last / fps)]
    think = f"The {colour} {shape} is visible from {span[0]} s to {span[1]} s; I give its box at each whole second."
    question = (
        f"When is the {colour} {shape} visible in the video, and where is it at each second of that span?"
    )
    return Sample(question, _dumps({"time": span, "boxes": boxes}), think, w, h, fps=fps)


def _wander(
    rng: np.random.Generator, mask: np.ndarray, w: int, h: int, n: int, stops: int
) -> list[tuple[int, int, int]]:
    """A piecewise-linear path through ``stops`` random positions, from frame 0 to n - 1."""
    mh, mw = mask.shape
    frames = np.linspace(0, n - 1, stops).round().astype(int)
    return [(int(f), int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1))) for f in frames]


# 1000 / W and 1000 / H are whole numbers (so pixel boxes are exact on the 0-1000 scale), W and H even.
TRACKING_SIZES: tuple[tuple[int, int], ...] = ((200, 200), (200, 100))


def _second_steps(
    rng: np.random.Generator, mask: np.ndarray, w: int, h: int, seconds: int, fps: int
) -> list[tuple[int, int, int]]:
    """Waypoints at every whole second with a whole-pixel velocity per frame in between, so each
    frame's position is exactly the linear interpolation of the per-second ones."""
    mh, mw = mask.shape
    x, y = int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1))
    path = [(0, x, y)]
    for k in range(1, seconds + 1):
        vx, vy = (int(v) for v in rng.integers(-4, 5, size=2))
        # Bounce off an edge by reversing; the frame leaves room for a second's move either way.
        x = x + vx * fps if 0 <= x + vx * fps <= w - mw else x - vx * fps
        y = y + vy * fps if 0 <= y + vy * fps <= h - mh else y - vy * fps
        path.append((k * fps, x, y))
    return path


def video_tracking(rng: np.random.Generator, path: Path) -> Sample:
    """Boxes, one per second, of an object given by its first-frame box; per-frame boxes too."""
    (w, h), bg = TRACKING_SIZES[int(rng.integers(len(TRACKING_SIZES)))], _one(rng, tuple(D.BACKGROUNDS))
    fps, seconds = int(rng.choice([4, 5])), int(rng.integers(6, 17))
    n = seconds * fps + 1
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    mask = _shape_mask(rng, shape, 24, 40)
    target = D.Sprite(mask, [(0, colour)], _second_steps(rng, mask, w, h, seconds, fps))
    sprites = []
    for c in _choose(rng, _others(tuple(D.COLOURS), colour), int(rng.integers(1, 3))):
        m = _shape_mask(rng, _one(rng, D.SHAPES), 20, 32)
        sprites.append(D.Sprite(m, [(0, c)], _wander(rng, m, w, h, n, 3)))
    _save_video(path, [*sprites, target], n, w, h, bg, fps)
    first = D.norm_box(target.box(0), w, h)
    boxes = {str(k): D.norm_box(target.box(k * fps), w, h) for k in range(1, min(seconds, 32) + 1)}
    think = f"The target starts at {first}; I follow it and give its box at each second up to {min(seconds, 32)} s."
    question = f"Track the object whose bounding box in the first frame (0 s) is {_dumps(first)}."
    frame_boxes = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in (target.box(i) for i in range(n))]
    return Sample(question, _dumps({"boxes": boxes}), think, w, h, fps=fps, frame_boxes=frame_boxes)


def video_segmentation(rng: np.random.Generator, path: Path) -> Sample:
    """Key second, box and points of a moving object, with a mask for every frame."""
    w, h, fps, bg = _video_frame(rng)
    n = int(rng.integers(3, 7)) * fps
    colour, shape = _one(rng, tuple(D.COLOURS)), _one(rng, D.SHAPES)
    first = 0 if rng.integers(2) == 0 else int(rng.integers(1, n - fps))
    mask = _shape_mask(rng, shape, 30, 48)
    target = D.Sprite(mask, [(0, colour)], _linear_path(rng, mask, w, h, first, n - 1), first=first)
    specs = _distractor_specs(rng, int(rng.integers(1, 3)), _others(tuple(D.COLOURS), colour))
    others = _statics(rng, specs, w, h, 20, 32)
    _save_video(path, [*others, target], n, w, h, bg, fps)
    t = int(rng.integers(math.ceil(first / fps), (n - 1) // fps + 1))
    answer = {"time": t, **_seg_answer(rng, target, others, t * fps, w, h)}
    masks = {str(i): D.rle(target.frame_mask(i, w, h)) for i in range(n)}
    think = f"The {colour} {shape} is clearly visible at {t} s in box {answer['boxes']}; I pick points inside it and on the background."
    return Sample(
        f"Segment the {colour} {shape} in the video.",
        _dumps(answer),
        think,
        w,
        h,
        fps=fps,
        segmentation=masks,
    )


GENERATORS: dict[tuple[str, str], Generator] = dict(
    zip(
        SYNTHETIC_TASKS,
        (
            image_multiple_choice,
            image_numerical,
            image_ocr,
            image_math,
            image_open_ended,
            image_spatial_grounding,
            image_segmentation,
            video_multiple_choice,
            video_numerical,
            video_regression,
            video_ocr,
            video_open_ended,
            video_temporal_grounding,
            video_spatial_temporal_grounding,
            video_tracking,
            video_segmentation,
        ),  # fmt: skip
    )
)


# ---------------------------------------------------------------- records


def task_slug(problem_type: str, data_type: str) -> str:
    """File-name stem of a task, e.g. ``video_temporal_grounding``."""
    return f"{data_type}_{problem_type.replace(' ', '_').replace('-', '_')}"


def _record(split: str, pid: int, problem_type: str, data_type: str, rel: str, s: Sample) -> dict[str, Any]:
    """One manifest record of ``split`` in the official format (SPEC §2)."""
    answer = f"<answer>{s.answer}</answer>"
    media_key = f"{data_type}s"
    if split == "rl":
        return {
            "problem_id": pid, "problem": PLACEHOLDERS[data_type] + s.question, "data_type": data_type,
            "problem_type": problem_type, "options": s.options, "data_source": DATA_SOURCE, "answer": answer,
            media_key: [rel], "problem_reserved_text": s.question,
        }  # fmt: skip
    if split == "sft":
        user = sft_user_content(s.question, problem_type, data_type, s.options)
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": f"<think>{s.think}</think>{answer}"},
        ]
        return {
            "problem_id": pid, "problem_type": problem_type, "data_type": data_type, "data_source": DATA_SOURCE,
            "messages": messages, media_key: [rel],
        }  # fmt: skip
    rec = {
        "problem_id": pid, "problem": s.question, "data_type": data_type, "problem_type": problem_type,
        "options": s.options, "data_source": DATA_SOURCE, "path": rel, "solution": answer,
    }  # fmt: skip
    if problem_type == "segmentation":
        rec["resolution"] = {"width": s.width, "height": s.height}
        rec["segmentation_output"] = s.segmentation
    if s.frame_boxes is not None:
        rec["resolution"] = {"width": s.width, "height": s.height}
        rec["frame_boxes"] = s.frame_boxes
    if s.fps is not None:
        rec["fps"] = s.fps
    return rec


@dataclass(frozen=True)
class _Job:
    """One sample to generate; picklable for the process pool."""

    out_dir: str
    split: str
    task: int
    index: int
    problem_id: int
    seed: int


def _run(job: _Job) -> dict[str, Any]:
    """Generate one sample (media on disk) and return its record."""
    problem_type, data_type = SYNTHETIC_TASKS[job.task]
    ext = "png" if data_type == "image" else "mp4"
    rel = f"media/{data_type}s/{job.split}_{task_slug(problem_type, data_type)}_{job.index:04d}.{ext}"
    rng = np.random.default_rng(
        np.random.SeedSequence([job.seed, SPLITS.index(job.split), job.task, job.index])
    )
    sample = GENERATORS[(problem_type, data_type)](rng, Path(job.out_dir) / rel)
    return _record(job.split, job.problem_id, problem_type, data_type, rel, sample)


def _jobs(out: Path, per_task: int, seed: int) -> list[_Job]:
    jobs, pid = [], 0
    for split in SPLITS:
        for task in range(len(SYNTHETIC_TASKS)):
            for i in range(per_task):
                jobs.append(_Job(str(out), split, task, i, pid, seed))
                pid += 1
    return jobs


def generate_suite(
    out_dir: str | Path, per_task: int = 8, seed: int = 0, workers: int = 0
) -> dict[str, Path]:
    """Write the synthetic suite under ``out_dir``: media and the rl/sft/eval manifests.

    ``per_task`` samples of every task in `SYNTHETIC_TASKS`, in each manifest; the three manifests
    hold different samples. ``workers`` > 0 fans out over a process pool (-1: one per CPU); the
    result does not depend on it. Returns ``{"rl": ..., "sft": ..., "eval": ...}`` manifest paths.
    """
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    out = Path(out_dir)
    for sub in ("images", "videos"):
        (out / "media" / sub).mkdir(parents=True, exist_ok=True)
    jobs = _jobs(out, per_task, seed)
    n_workers = (os.cpu_count() or 1) if workers < 0 else workers
    if n_workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
            records = list(pool.map(_run, jobs, chunksize=max(1, len(jobs) // (8 * n_workers))))
    else:
        records = [_run(job) for job in jobs]
    paths = {}
    for split in SPLITS:
        paths[split] = out / f"{split}.json"
        rows = [r for r, j in zip(records, jobs) if j.split == split]
        paths[split].write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return paths
