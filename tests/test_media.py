"""Image/video loading within pixel budgets, with exact timestamps (SPEC §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.media import (
    MediaError,
    PixelBudget,
    fit_size,
    load_image,
    load_video,
    sample_indices,
    stage_media,
)
from tests.conftest import BAR_STEP, BAR_WIDTH


def test_stage_budgets_follow_spec():
    rl, sft, ev = stage_media("rl"), stage_media("sft"), stage_media("eval", "qwen2_5_vl")
    assert (
        rl.image.min_pixels,
        rl.image.max_pixels,
        rl.video_frame.min_pixels,
        rl.video_frame.max_pixels,
    ) == (3136, 1048576, 4096, 65536)
    assert (sft.image.max_pixels, sft.video_frame.max_pixels) == (802816, 100352)
    assert (ev.image.max_pixels, ev.video_frame.max_pixels, ev.factor, rl.factor) == (1048576, 262144, 28, 32)
    assert rl.fps == 2.0 and rl.max_frames == 128


@pytest.mark.parametrize("factor", [32, 28])
@pytest.mark.parametrize(
    ("h", "w", "lo", "hi"), [(480, 640, 3136, 65536), (40, 30, 4096, 65536), (2000, 3000, 3136, 1048576)]
)
def test_fit_size_in_budget(factor: int, h: int, w: int, lo: int, hi: int):
    nh, nw = fit_size(h, w, PixelBudget(lo, hi), factor)
    assert nh % factor == 0 and nw % factor == 0
    assert lo <= nh * nw <= hi
    assert abs(nw / nh - w / h) / (w / h) < 0.35  # aspect kept up to rounding


def test_load_image_resizes_into_budget(media_dir: Path):
    item = load_image(media_dir / "a.png", PixelBudget(3136, 64 * 64 * 2), factor=32)
    assert item.original_size == (200, 120)
    w, h = item.image.size
    assert w % 32 == 0 and h % 32 == 0 and w * h <= 64 * 64 * 2 and item.image.mode == "RGB"


def test_sample_indices_rate_and_cap():
    assert sample_indices(80, 8.0, 2.0, 128) == [round(i * 79 / 19) for i in range(20)]  # 10 s at 2 fps
    capped = sample_indices(8000, 8.0, 2.0, 128)
    assert len(capped) == 128 and capped[0] == 0 and capped[-1] == 7999
    assert len(sample_indices(6, 8.0, 2.0, 128)) == 4  # short clip: the 4-frame minimum
    assert len(sample_indices(3, 8.0, 2.0, 128)) == 3  # never more than the clip has


def test_video_timestamps_match_content(media_dir: Path):
    clip = load_video(media_dir / "bar.mp4", PixelBudget(1024, 48 * 96), factor=32, fps=2.0)
    assert clip.native_fps == pytest.approx(8.0) and clip.total_frames == 40
    t, c, h, w = clip.frames.shape
    assert c == 3 and h % 32 == 0 and w % 32 == 0 and h * w <= 48 * 96
    assert t == len(clip.timestamps) == 10  # 5 s at 2 fps
    assert clip.sample_fps == pytest.approx(2.0)
    for frame, ts in zip(clip.frames, clip.timestamps):
        index = round(ts * 8.0)
        expected_centre = (index * BAR_STEP + BAR_WIDTH / 2) * w / 192
        column_mass = frame.float().mean(dim=(0, 1))
        centre = float((column_mass * (column_mass > 128)).nonzero().float().mean()) + 0.5
        assert centre == pytest.approx(expected_centre, abs=2.0)


def test_video_max_frames_uniform(media_dir: Path):
    clip = load_video(media_dir / "bar.mp4", PixelBudget(1024, 4096), factor=32, fps=8.0, max_frames=6)
    assert clip.frame_indices == [0, 8, 16, 23, 31, 39]
    assert clip.timestamps == [i / 8.0 for i in clip.frame_indices]


@pytest.mark.parametrize(
    ("name", "loader", "message"),
    [
        ("missing.png", "image", "image file not found"),
        ("corrupt.png", "image", "cannot decode image"),
        ("missing.mp4", "video", "video file not found"),
        ("corrupt.mp4", "video", "cannot decode video"),
    ],
)
def test_bad_media_raise_media_error(media_dir: Path, name: str, loader: str, message: str):
    fn = load_image if loader == "image" else load_video
    with pytest.raises(MediaError, match=message) as info:
        fn(media_dir / name, PixelBudget(1024, 4096), record="m.json #3 problem_id=7")
    assert info.value.path == str(media_dir / name)
    assert "problem_id=7" in str(info.value)
