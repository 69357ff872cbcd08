"""Shared fixtures: tiny media written on the fly, and the offline Qwen-VL processors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BAR_WIDTH = 16
BAR_STEP = 4  # the white bar moves this many pixels right per frame


def write_bar_video(path: Path, frames: int = 40, fps: int = 8, width: int = 192, height: int = 96) -> None:
    """A video whose frame i has a white bar starting at column i * BAR_STEP (position encodes time)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000
        for i in range(frames):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[:, i * BAR_STEP : i * BAR_STEP + BAR_WIDTH] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(root / "b.png")
    write_bar_video(root / "bar.mp4")
    (root / "corrupt.mp4").write_bytes(b"\x00not a video" * 50)
    (root / "corrupt.png").write_bytes(b"\x89PNG broken")
    return root


@pytest.fixture(scope="session")
def tokenizer():
    from lightning_modules.model.processing import qwen_tokenizer

    return qwen_tokenizer()


@pytest.fixture(scope="session")
def processor(tokenizer):
    from lightning_modules.model.processing import build_processor

    return build_processor("qwen3_vl", tokenizer)


@pytest.fixture(scope="session")
def processor_25(tokenizer):
    from lightning_modules.model.processing import build_processor

    return build_processor("qwen2_5_vl", tokenizer)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: the tiny model runs far faster so on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
