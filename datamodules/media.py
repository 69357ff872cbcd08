"""Image and video loading within the per-stage pixel budgets of SPEC §4.

Frames come out already resized to multiples of the backbone's patch factor (32 for Qwen3-VL, 28 for
Qwen2.5-VL), so the processor runs with ``do_resize=False`` and this module is the one place that
decides resolution. Videos keep their timestamps, so answers in seconds stay correct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize


class MediaError(RuntimeError):
    """A missing, corrupt or empty media file."""

    def __init__(self, path: str | Path, message: str, record: str = ""):
        self.path, self.record = str(path), record
        where = f" (record: {record})" if record else ""
        super().__init__(f"{path}{where}: {message}")


@dataclass(frozen=True)
class PixelBudget:
    """Pixels per image or per video frame: the resized area lies in [min_pixels, max_pixels]."""

    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class MediaConfig:
    """Resolution and sampling of one stage (SPEC §4)."""

    image: PixelBudget
    video_frame: PixelBudget
    fps: float = 2.0
    max_frames: int = 128
    min_frames: int = 4
    factor: int = 32


# SPEC §4. Minimums the spec leaves open follow the RL stage.
STAGE_MEDIA: dict[str, MediaConfig] = {
    "rl": MediaConfig(PixelBudget(3136, 1_048_576), PixelBudget(4096, 65_536)),
    "sft": MediaConfig(PixelBudget(3136, 802_816), PixelBudget(4096, 100_352)),
    "eval": MediaConfig(PixelBudget(3136, 1_048_576), PixelBudget(4096, 262_144)),
}
PATCH_FACTOR: dict[str, int] = {"qwen3_vl": 32, "qwen2_5_vl": 28}


def stage_media(stage: str, family: str = "qwen3_vl") -> MediaConfig:
    """The SPEC §4 media settings of a stage, rounded to a backbone family's patch factor."""
    base = STAGE_MEDIA[stage]
    return MediaConfig(
        base.image, base.video_frame, base.fps, base.max_frames, base.min_frames, PATCH_FACTOR[family]
    )


def fit_size(height: int, width: int, budget: PixelBudget, factor: int) -> tuple[int, int]:
    """(height, width) rounded to ``factor`` with the area inside the budget (Qwen's smart_resize)."""
    return smart_resize(
        height, width, factor=factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
    )


@dataclass
class ImageItem:
    image: Image.Image
    original_size: tuple[int, int]  # (width, height)


@dataclass
class VideoClip:
    """Sampled, resized frames with the times (seconds) they were taken at."""

    frames: torch.Tensor  # uint8 [T, 3, H, W]
    frame_indices: list[int]
    timestamps: list[float]
    native_fps: float
    total_frames: int
    original_size: tuple[int, int]  # (width, height)

    @property
    def sample_fps(self) -> float:
        duration = self.total_frames / self.native_fps
        return len(self.frame_indices) / duration if duration > 0 else self.native_fps


def open_rgb(path: str | Path, record: str = "") -> Image.Image:
    """An image decoded as RGB at its stored size; `MediaError` naming the file when it cannot be."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise MediaError(path, "image file not found", record) from None
    except Exception as e:  # PIL raises many types on corrupt data
        raise MediaError(path, f"cannot decode image: {e}", record) from e


def load_image(path: str | Path, budget: PixelBudget, factor: int = 32, record: str = "") -> ImageItem:
    """Decode an image as RGB and resize it into the budget."""
    img = open_rgb(path, record)
    w, h = img.size
    if w == 0 or h == 0:
        raise MediaError(path, "image is empty", record)
    new_h, new_w = fit_size(h, w, budget, factor)
    resized = img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return ImageItem(resized, (w, h))


def sample_indices(
    total_frames: int, native_fps: float, fps: float, max_frames: int, min_frames: int = 4
) -> list[int]:
    """Frames at ``fps`` over the clip, at most ``max_frames``, spread uniformly (qwen-vl-utils' rule).

    The count is rounded down to an even number (the temporal patch is 2 frames), as qwen-vl-utils does.
    """
    duration = total_frames / native_fps
    wanted = math.floor(duration * fps / 2) * 2
    upper = min(max_frames, total_frames)
    count = max(min(wanted, upper - upper % 2), min(min_frames, total_frames))
    return np.linspace(0, total_frames - 1, max(count, 1)).round().astype(int).tolist()


def load_video(
    path: str | Path,
    budget: PixelBudget,
    factor: int = 32,
    fps: float = 2.0,
    max_frames: int = 128,
    min_frames: int = 4,
    record: str = "",
) -> VideoClip:
    """Decode a video with decord, sample it at ``fps`` and resize the frames into the per-frame budget."""
    import decord

    if not Path(path).is_file():
        raise MediaError(path, "video file not found", record)
    try:
        probe = decord.VideoReader(str(path), num_threads=1)
        total, native_fps = len(probe), float(probe.get_avg_fps())
        if total == 0:
            raise MediaError(path, "video has no frames", record)
        height, width = probe[0].shape[:2]
        new_h, new_w = fit_size(height, width, budget, factor)
        indices = sample_indices(total, native_fps if native_fps > 0 else 1.0, fps, max_frames, min_frames)
        # Decoding straight to the target size lets ffmpeg scale in C: much faster than resizing after.
        reader = (
            probe
            if (new_h, new_w) == (height, width)
            else decord.VideoReader(str(path), width=new_w, height=new_h, num_threads=1)
        )
        frames = reader.get_batch(indices).asnumpy()
    except MediaError:
        raise
    except Exception as e:  # decord raises DECORDError and RuntimeError subclasses
        raise MediaError(path, f"cannot decode video: {e}", record) from e
    native_fps = native_fps if native_fps > 0 else 1.0
    return VideoClip(
        frames=torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))),
        frame_indices=indices,
        timestamps=[i / native_fps for i in indices],
        native_fps=native_fps,
        total_frames=total,
        original_size=(width, height),
    )


def processor_family(processor: Any) -> str | None:
    """``qwen3_vl`` or ``qwen2_5_vl`` from a Qwen-VL processor's class; None for any other object."""
    name = type(processor).__name__
    if name.startswith("Qwen3VL"):
        return "qwen3_vl"
    if name.startswith("Qwen2_5_VL"):
        return "qwen2_5_vl"
    return None


# Media at native resolution (segmentation masks are scored on the file's own pixel grid)


def read_image(path: str | Path) -> np.ndarray:
    """An image as [H, W, 3] uint8 RGB at its stored size (no EXIF rotation, so masks keep the file's grid)."""
    return np.asarray(open_rgb(path), dtype=np.uint8).copy()


def _valid_fps(fps: Any) -> float | None:
    try:
        f = float(fps)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _read_decord(path: str) -> tuple[np.ndarray, float]:
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    n, fps = len(reader), _valid_fps(reader.get_avg_fps())
    if n == 0 or fps is None:
        raise ValueError(f"decord: {n} frames at fps {reader.get_avg_fps()}")
    return reader.get_batch(list(range(n))).asnumpy(), fps


def _read_pyav(path: str) -> tuple[np.ndarray, float]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = (
            _valid_fps(stream.average_rate) or _valid_fps(stream.guessed_rate) or _valid_fps(stream.base_rate)
        )
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not frames or fps is None:
        raise ValueError(f"PyAV: {len(frames)} frames at fps {fps}")
    return np.stack(frames), fps


def read_frames(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames [T, H, W, 3] uint8 RGB at native resolution, and the native fps.

    decord first; PyAV when decord fails or reports no frames or no fps. Raises `MediaError` when both fail.
    """
    if not Path(path).is_file():
        raise MediaError(path, "video file not found")
    errors = []
    for reader in (_read_decord, _read_pyav):
        try:
            return reader(str(path))
        except Exception as e:  # decord and PyAV raise their own error types
            errors.append(f"{reader.__name__[6:]}: {e}")
    raise MediaError(path, "cannot decode video (" + "; ".join(errors) + ")")
