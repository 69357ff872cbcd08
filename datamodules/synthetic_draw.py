"""Drawing and writing helpers of the synthetic suite: palettes, sprites, scenes, PNG/MP4, masks.

Everything is drawn without anti-aliasing, so an object's pixels are exactly its sprite: boxes,
masks and points computed from sprites are the ground truth of what lands in the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

# Object colours: saturated and far apart, so they survive YUV 4:2:0 compression.
COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
}
# Backgrounds: muted, far from every object colour.
BACKGROUNDS: dict[str, RGB] = {
    "light gray": (205, 205, 205),
    "beige": (232, 222, 196),
    "pale blue": (196, 214, 236),
    "dark gray": (64, 64, 64),
}
LIGHT_BACKGROUNDS: tuple[str, ...] = ("light gray", "beige", "pale blue")
# Text colours, used on light backgrounds only.
TEXT_COLOURS: dict[str, RGB] = {"black": (20, 20, 20), "navy": (20, 30, 110), "maroon": (110, 20, 30)}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
Box = tuple[int, int, int, int]  # pixel box, end exclusive


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` pixels."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=512)
def shape_sprite(shape: str, w: int, h: int) -> np.ndarray:
    """Boolean (h, w) mask of a shape filling its w×h box (read-only, cached)."""
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    if shape == "square":
        d.rectangle((0, 0, w - 1, h - 1), fill=255)
    elif shape == "circle":
        d.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == "triangle":
        d.polygon([(w / 2, 0), (0, h - 1), (w - 1, h - 1)], fill=255)
    elif shape == "diamond":
        d.polygon([(w / 2, 0), (w - 1, h / 2), (w / 2, h - 1), (0, h / 2)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    return _freeze(np.asarray(im) > 0)


@lru_cache(maxsize=512)
def text_sprite(text: str, size: int) -> np.ndarray:
    """Boolean mask of ``text`` in the built-in font, 1-bit (no anti-aliasing), cropped tight."""
    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    im = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    d = ImageDraw.Draw(im)
    d.fontmode = "1"
    d.text((2 - left, 2 - top), text, fill=255, font=f)
    return _freeze(crop_tight(np.asarray(im) > 0))


def _freeze(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def crop_tight(mask: np.ndarray) -> np.ndarray:
    """``mask`` cropped to the bounding box of its True pixels."""
    x0, y0, x1, y1 = mask_box(mask)
    return mask[y0:y1, x0:x1]


def mask_box(mask: np.ndarray) -> Box:
    """Pixel box (x0, y0, x1, y1), end exclusive, of a non-empty mask."""
    ys, xs = np.any(mask, axis=1), np.any(mask, axis=0)
    if not ys.any():
        raise ValueError("empty mask has no box")
    y0, y1 = int(np.argmax(ys)), int(len(ys) - np.argmax(ys[::-1]))
    x0, x1 = int(np.argmax(xs)), int(len(xs) - np.argmax(xs[::-1]))
    return x0, y0, x1, y1


def norm_box(box: Box, width: int, height: int) -> list[int]:
    """Pixel box (end exclusive) on the 0–1000 scale: x·1000/W, y·1000/H, rounded."""
    x0, y0, x1, y1 = box
    return [
        round(x0 * 1000 / width),
        round(y0 * 1000 / height),
        round(x1 * 1000 / width),
        round(y1 * 1000 / height),
    ]


def norm_point(px: int, py: int, width: int, height: int) -> list[int]:
    """Centre of pixel (px, py) on the 0–1000 scale."""
    return [round((px + 0.5) * 1000 / width), round((py + 0.5) * 1000 / height)]


@dataclass
class Sprite:
    """A drawable object: a mask, colour changes over frames, a path and a visible frame range."""

    mask: np.ndarray
    colours: list[tuple[int, str]]  # (first frame, colour name), sorted by frame
    path: list[tuple[int, int, int]]  # (frame, x, y) waypoints of the top-left corner
    first: int = 0
    last: int = 10**9
    palette: dict[str, RGB] = field(default_factory=lambda: COLOURS)

    _chroma: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def visible(self, i: int) -> bool:
        return self.first <= i <= self.last

    def colour(self, i: int) -> RGB:
        name = self.colours[0][1]
        for start, c in self.colours:
            if i >= start:
                name = c
        return self.palette[name]

    def pos(self, i: int) -> tuple[int, int]:
        fs, xs, ys = zip(*self.path)
        return round(float(np.interp(i, fs, xs))), round(float(np.interp(i, fs, ys)))

    def box(self, i: int) -> Box:
        """Tight pixel box at frame ``i``."""
        x, y = self.pos(i)
        x0, y0, x1, y1 = mask_box(self.mask)
        return x + x0, y + y0, x + x1, y + y1

    def frame_mask(self, i: int, width: int, height: int) -> np.ndarray:
        """Full-frame mask at frame ``i`` (empty when not visible)."""
        out = np.zeros((height, width), dtype=bool)
        if self.visible(i):
            x, y = self.pos(i)
            h, w = self.mask.shape
            out[y : y + h, x : x + w] = self.mask
        return out


def still(mask: np.ndarray, colour: str, x: int, y: int, palette: dict[str, RGB] | None = None) -> Sprite:
    """A static, always visible sprite."""
    return Sprite(mask, [(0, colour)], [(0, x, y)], palette=palette or COLOURS)


def render(sprites: Sequence[Sprite], i: int, width: int, height: int, background: RGB) -> np.ndarray:
    """Frame ``i`` as an (H, W, 3) uint8 array; later sprites are drawn on top."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = background
    for s in sprites:
        if s.visible(i):
            x, y = s.pos(i)
            h, w = s.mask.shape
            frame[y : y + h, x : x + w][s.mask] = s.colour(i)
    return frame


@lru_cache(maxsize=64)
def yuv(rgb: RGB) -> RGB:
    """BT.601 limited-range (Y, U, V) of an RGB colour, as ffmpeg's default conversion."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


def yuv420_background(width: int, height: int, background: RGB) -> np.ndarray:
    """A (H·3/2, W) yuv420p frame of one colour, in PyAV's planar layout."""
    y, u, v = yuv(background)
    out = np.empty((height * 3 // 2, width), dtype=np.uint8)
    out[:height], out[height : height + height // 4], out[height + height // 4 :] = y, u, v
    return out


def _chroma_mask(s: Sprite, px: int, py: int) -> np.ndarray:
    """Half-resolution mask of a sprite whose corner has parity (px, py): 2×2 blocks at least half covered."""
    key = (px, py)
    if key not in s._chroma:
        h, w = s.mask.shape
        padded = np.zeros((py + h + (py + h) % 2, px + w + (px + w) % 2), dtype=np.uint8)
        padded[py : py + h, px : px + w] = s.mask
        hh, ww = padded.shape[0] // 2, padded.shape[1] // 2
        s._chroma[key] = padded.reshape(hh, 2, ww, 2).sum(axis=(1, 3)) >= 2
    return s._chroma[key]


def render_yuv420(sprites: Sequence[Sprite], i: int, base: np.ndarray) -> np.ndarray:
    """Frame ``i`` drawn straight into yuv420p planes over ``base`` (no RGB conversion per frame)."""
    out = base.copy()
    h, w = base.shape[0] * 2 // 3, base.shape[1]
    planes = (out[:h], out[h : h + h // 4].reshape(h // 2, w // 2), out[h + h // 4 :].reshape(h // 2, w // 2))
    for s in sprites:
        if not s.visible(i):
            continue
        x, y = s.pos(i)
        mh, mw = s.mask.shape
        cy, cu, cv = yuv(s.colour(i))
        planes[0][y : y + mh, x : x + mw][s.mask] = cy
        cm = _chroma_mask(s, x % 2, y % 2)
        ch, cw = cm.shape
        planes[1][y // 2 : y // 2 + ch, x // 2 : x // 2 + cw][cm] = cu
        planes[2][y // 2 : y // 2 + ch, x // 2 : x // 2 + cw][cm] = cv
    return out


def overlaps(a: Box, b: Box, margin: int) -> bool:
    """Whether two pixel boxes come closer than ``margin`` pixels."""
    return not (
        a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]
    )


def place(
    rng: np.random.Generator,
    sizes: Sequence[tuple[int, int]],
    width: int,
    height: int,
    margin: int = 4,
    avoid: Sequence[Box] = (),
) -> list[tuple[int, int]]:
    """Top-left corners for boxes of ``sizes`` inside the frame, none closer than ``margin``."""
    taken = list(avoid)
    corners = []
    for w, h in sizes:
        if w > width or h > height:
            raise ValueError(f"a {w}x{h} object does not fit in {width}x{height}")
        for _ in range(2000):
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (x, y, x + w, y + h)
            if not any(overlaps(box, t, margin) for t in taken):
                break
        else:
            raise RuntimeError(f"cannot place {len(sizes)} objects in {width}x{height}")
        taken.append(box)
        corners.append((x, y))
    return corners


def path_box(sprite: Sprite, n_frames: int) -> Box:
    """Pixel box that holds ``sprite`` over all frames of its path."""
    boxes = [sprite.box(i) for i in range(n_frames)]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def shift(mask: np.ndarray, dy: int, dx: int, fill: bool) -> np.ndarray:
    """``mask`` moved by (dy, dx) with ``fill`` shifted in at the border."""
    h, w = mask.shape
    out = np.full_like(mask, fill)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _morph(mask: np.ndarray, r: int, grow: bool) -> np.ndarray:
    """Separable square (2r+1)² dilation (``grow``) or erosion; outside the frame is False."""
    out = mask
    for axis in (0, 1):
        acc = out.copy()
        for d in range(1, r + 1):
            for step in (d, -d):
                moved = shift(out, step if axis == 0 else 0, step if axis == 1 else 0, False)
                acc = acc | moved if grow else acc & moved
        out = acc
    return out


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Erosion by a (2r+1)² square; outside the frame counts as False."""
    return _morph(mask, r, grow=False)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilation by a (2r+1)² square."""
    return _morph(mask, r, grow=True)


def spread_points(
    rng: np.random.Generator, candidates: np.ndarray, start: tuple[float, float], k: int = 3
) -> list[tuple[int, int]]:
    """``k`` pixels (x, y) of a candidate mask, spread by farthest-point sampling from ``start``."""
    ys, xs = np.nonzero(candidates)
    if len(xs) < k:
        raise RuntimeError("too few candidate pixels for points")
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    pts += rng.uniform(-1e-3, 1e-3, size=pts.shape)  # seeded tie-breaking
    dist = np.hypot(pts[:, 0] - start[0], pts[:, 1] - start[1])
    chosen = [int(np.argmin(dist))]
    dist = np.full(len(pts), np.inf)
    while len(chosen) < k:
        last = pts[chosen[-1]]
        dist = np.minimum(dist, np.hypot(pts[:, 0] - last[0], pts[:, 1] - last[1]))
        chosen.append(int(np.argmax(dist)))
    return [(int(xs[c]), int(ys[c])) for c in chosen]


def segmentation_points(
    rng: np.random.Generator, target: np.ndarray, occupied: np.ndarray, box: Box
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """3 positive pixels well inside ``target``, 3 negative pixels on clear background.

    Negatives prefer background inside the box, else a ring just outside it; both keep a margin
    from every object (``occupied``).
    """
    x0, y0, x1, y1 = box
    r = max(1, min(x1 - x0, y1 - y0) // 6)
    inner = erode(target, r)
    if inner.sum() < 3:
        inner = target
    ys, xs = np.nonzero(target)
    positive = spread_points(rng, inner, (float(xs.mean()), float(ys.mean())))
    free = ~dilate(occupied, 3)
    region = np.zeros_like(target)
    region[y0:y1, x0:x1] = True
    if (free & region).sum() < 30:
        h, w = target.shape
        region[max(0, y0 - 14) : min(h, y1 + 14), max(0, x0 - 14) : min(w, x1 + 14)] = True
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    negative = spread_points(rng, free & region, (cx, cy))
    return positive, negative


def rle(mask: np.ndarray) -> dict[str, object]:
    """COCO RLE of a boolean mask, with ``counts`` as a str."""
    from pycocotools import mask as mask_utils

    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in enc["size"]], "counts": enc["counts"].decode("ascii")}


def write_png(path: Path, frame: np.ndarray) -> None:
    """Write an RGB array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="PNG", compress_level=1)


@lru_cache(maxsize=1)
def video_codec() -> str:
    """libx264 when PyAV has it, else mpeg4."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int) -> int:
    """Write frames as an MP4 at ``fps`` (constant frame rate); returns the frame count.

    A frame is an (H, W, 3) RGB array or an (H·3/2, W) yuv420p array (`render_yuv420`).
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.pix_fmt = "yuv420p"
        # Single-threaded, fixed quality: byte-for-byte reproducible output.
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast", "threads": "1"}
        else:
            stream.bit_rate, stream.thread_count = 4_000_000, 1
        for frame in frames:
            planar = frame.ndim == 2
            if n == 0:
                stream.height, stream.width = (
                    frame.shape[0] * 2 // 3 if planar else frame.shape[0],
                    frame.shape[1],
                )
            vf = av.VideoFrame.from_ndarray(frame, format="yuv420p" if planar else "rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    return n
