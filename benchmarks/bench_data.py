"""Data-pipeline benchmark on the embedded synthetic suite.

1. Rows per second through the full collate path (decode media, build the example, collate with the
   real offline Qwen3-VL processor), image rows and video rows separately, mode ``rl``.
2. Video decode-and-resize frames per second of our ``load_video`` against ``qwen_vl_utils.fetch_video``
   on the same files in the same run, with the same settings (fps 2, the RL per-frame pixel budget,
   patch factor 32), reported as ours / peer. Frame counts and output sizes are checked to match.

    python benchmarks/bench_data.py --per-task 8 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datamodules.collate import Collator, build_example  # noqa: E402
from datamodules.media import load_video, stage_media  # noqa: E402
from datamodules.records import load_records  # noqa: E402
from lightning_modules.model.processing import build_processor  # noqa: E402


def median_rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


# --------------------------------------------------------------------------- collate path


def time_collate(records: list, collator: Collator, media, batch_size: int) -> tuple[float, float]:
    """Seconds for all rows: (total, of which media decode + example building)."""
    t_load = 0.0
    start = time.perf_counter()
    for i in range(0, len(records), batch_size):
        t0 = time.perf_counter()
        examples = [build_example(r, "rl", media) for r in records[i : i + batch_size]]
        t_load += time.perf_counter() - t0
        batch = collator(examples)
        assert batch["input_ids"].shape[0] == len(examples)
    return time.perf_counter() - start, t_load


def bench_collate(records: list, repeats: int, batch_size: int) -> list[tuple[str, int, float, float]]:
    media = stage_media("rl", "qwen3_vl")
    collator = Collator(build_processor("qwen3_vl"), "rl")
    rows = []
    for kind in ("image", "video"):
        subset = [r for r in records if r.data_type == kind]
        if not subset:
            continue
        time_collate(subset[:batch_size], collator, media, batch_size)  # warm-up: lazy imports, caches
        totals, loads = [], []
        for _ in range(repeats):
            total, load = time_collate(subset, collator, media, batch_size)
            totals.append(total)
            loads.append(load)
        rows.append(
            (
                kind,
                len(subset),
                median_rate(len(subset), totals),
                statistics.median(loads) / statistics.median(totals),
            )
        )
    return rows


# --------------------------------------------------------------------------- video decode


def peer_backend(name: str | None):
    """Point qwen-vl-utils at a reader backend (None: its own default choice); return the resolved name."""
    from qwen_vl_utils import vision_process as vp

    vp.FORCE_QWENVL_VIDEO_READER = name if name is not None else os.environ.get("FORCE_QWENVL_VIDEO_READER")
    vp.get_video_reader_backend.cache_clear()
    return vp.get_video_reader_backend()


def peer_settings(path: Path, budget, media, nframes: int | None = None) -> dict:
    ele = {"video": str(path), "min_pixels": budget.min_pixels, "max_pixels": budget.max_pixels}
    if nframes is None:
        ele.update(fps=media.fps, max_frames=media.max_frames, min_frames=media.min_frames)
    else:
        ele["nframes"] = nframes
    return ele


def bench_video(paths: list[Path], repeats: int) -> None:
    from qwen_vl_utils import fetch_video

    media = stage_media("rl", "qwen3_vl")
    budget = media.video_frame
    patch = media.factor // 2  # fetch_video takes the ViT patch; it multiplies by the merge size (2)

    def ours(path: Path) -> torch.Tensor:
        return load_video(path, budget, media.factor, media.fps, media.max_frames, media.min_frames).frames

    # Settings check on every file: frame count and size must match, pixels must be close.
    default = peer_backend(None)
    forced: dict[Path, int] = {}
    frames: list[int] = []
    sizes: dict[str, int] = {}
    max_err = 0.0
    for p in paths:
        a = ours(p)
        b = fetch_video(peer_settings(p, budget, media), image_patch_size=patch)
        if a.shape[0] != b.shape[0]:  # different frame-count rounding: give the peer our count
            forced[p] = a.shape[0]
            b = fetch_video(peer_settings(p, budget, media, a.shape[0]), image_patch_size=patch)
        assert a.shape == b.shape, (p, a.shape, b.shape)
        frames.append(a.shape[0])
        size = f"{a.shape[3]}x{a.shape[2]}"
        sizes[size] = sizes.get(size, 0) + 1
        max_err = max(max_err, (a.float() - b.clamp(0, 255).round()).abs().mean().item())
    total_frames = sum(frames)
    print(f"\nvideo files: {len(paths)}, {total_frames} frames; ours and peer shapes equal on every file")
    print(
        f"  frames per clip {min(frames)}-{max(frames)}; resized WxH (files): "
        + ", ".join(f"{k} ({v})" for k, v in sorted(sizes.items()))
    )
    print(
        f"  clips where fps-{media.fps:g} frame counts round differently (peer then given ours as nframes): {len(forced)}"
    )
    print(
        f"  worst per-clip mean |ours - peer| pixel difference: {max_err:.2f} / 255 (ours: ffmpeg scale; peer: torch bicubic)"
    )

    def run_pair(flip: bool) -> tuple[float, float]:
        """Seconds for all files, ours and peer alternating file by file, so load drift hits both alike."""
        t_ours = t_peer = 0.0
        for p in paths:
            for side in (1, 0) if flip else (0, 1):
                t = time.perf_counter()
                if side == 0:
                    ours(p)
                else:
                    fetch_video(peer_settings(p, budget, media, forced.get(p)), image_patch_size=patch)
                dt = time.perf_counter() - t
                if side == 0:
                    t_ours += dt
                else:
                    t_peer += dt
        return t_ours, t_peer

    variants = [(f"default = {default}", None)] + [
        (n, n) for n in ("decord", "torchvision", "torchcodec") if n != default
    ]
    results = []
    for label, name in variants:
        if name and name != "decord" and importlib.util.find_spec(name) is None:
            results.append((label, None, None, f"unavailable: {name} not installed"))
            continue
        try:
            peer_backend(name)
            fetch_video(peer_settings(paths[0], budget, media, forced.get(paths[0])), image_patch_size=patch)
        except Exception as e:  # backend broken in this environment
            results.append((label, None, None, f"unavailable: {type(e).__name__}: {str(e)[:60]}"))
            continue
        ours_t, peer_t = zip(*(run_pair(flip=i % 2 == 1) for i in range(repeats)))
        results.append(
            (label, median_rate(total_frames, list(ours_t)), median_rate(total_frames, list(peer_t)), "")
        )
    peer_backend(None)

    print(
        f"\nvideo decode + resize (fps {media.fps:g}, {budget.min_pixels}-{budget.max_pixels} px/frame, factor {media.factor}), median of {repeats}, frames/s"
    )
    print(f"  {'fetch_video backend':<22} {'ours':>8} {'peer':>8} {'ours/peer':>10}")
    for label, fo, fp, note in results:
        if fo is None:
            print(f"  {label:<22} {note}")
        else:
            print(f"  {label:<22} {fo:>8.1f} {fp:>8.1f} {fo / fp:>9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None, help="suite directory (default: a temporary one)")
    args = ap.parse_args()

    from datamodules.synthetic import generate_suite

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        t = time.perf_counter()
        suite = generate_suite(out, args.per_task, args.seed)
        records = load_records(suite["rl"], "rl")
        print(
            f"suite: {len(records)} RL rows, per_task={args.per_task}, seed={args.seed}, generated in {time.perf_counter() - t:.1f}s"
        )
        print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")

        rows = bench_collate(records, args.repeats, args.batch_size)
        print(f"\ncollate path (rl, Qwen3-VL processor, batch {args.batch_size}), median of {args.repeats}")
        print(f"  {'rows':<6} {'n':>4} {'rows/s':>8} {'media share':>12}")
        for kind, n, rate, share in rows:
            print(f"  {kind:<6} {n:>4} {rate:>8.1f} {share:>11.0%}")

        videos = sorted({p for r in records if r.data_type == "video" for p in r.media})
        if videos:
            bench_video(videos, args.repeats)


if __name__ == "__main__":
    main()
