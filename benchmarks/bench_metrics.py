"""Speed of the metrics against the reference implementations users run today, in one run.

- J&F: `JAndF.update` vs the davis2017-evaluation algorithm (numpy + cv2.dilate + skimage disk,
  one frame at a time), 100 frames at 480x854.
- AO/SR: `AverageOverlap` (one batched update; one update per sequence printed too) vs the got10k
  toolkit (`rect_iou` per sequence, then `_evaluate`).
- cIoU: `CumulativeIoU` vs a numpy loop over samples.

Each side runs once to warm up, then `--repeats` times, interleaved; the medians of wall-clock and
process CPU time are reported (CPU time is steadier on a shared machine).

    python benchmarks/bench_metrics.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from got10k.experiments import ExperimentGOT10k
from got10k.utils.metrics import rect_iou

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "metrics"))
from metrics_reference_impls import blob_masks, ciou_loop, sequence_jf  # noqa: E402

from metrics import AverageOverlap, CumulativeIoU, JAndF  # noqa: E402


def _time(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each function, interleaving the calls."""
    for fn in fns.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[k].append((time.perf_counter() - w0, time.process_time() - c0))
    return {
        k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()
    }


def _object_masks(rng: np.random.Generator, t: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One object per sequence, as DAVIS scores them: a body and a limb drifting across the frame.

    The prediction is shifted two pixels, misses the limb in a third of the frames and has a
    small false blob nearby.
    """
    yy, xx = np.mgrid[:h, :w]
    target = np.zeros((t, h, w), bool)
    for i in range(t):
        cx, cy = 300 + 2.5 * i, 240 + 40 * np.sin(i / 15)
        target[i] = ((xx - cx) / 110) ** 2 + ((yy - cy) / 85) ** 2 <= 1
        target[i] |= ((xx - cx - 100) / 45) ** 2 + ((yy - cy + 60) / 20) ** 2 <= 1
    pred = np.roll(target, 2, axis=2)
    limb_off = rng.random(t) < 0.33
    pred[limb_off] = np.roll(
        target[limb_off] & (xx < 350 + 2.5 * np.arange(t)[limb_off, None, None]), 2, axis=2
    )
    pred |= ((xx - 520) / 12) ** 2 + ((yy - 120) / 9) ** 2 <= 1
    return pred, target


def bench_jf(
    pred: np.ndarray, target: np.ndarray, repeats: int
) -> tuple[dict[str, tuple[float, float]], float]:
    pt, tt = torch.from_numpy(pred), torch.from_numpy(target)

    def ours() -> None:
        m = JAndF()
        m.update(pt, tt)
        m.compute()

    def ref() -> None:
        j, f = sequence_jf(pred, target)
        (j.mean() + f.mean()) / 2

    m = JAndF()
    m.update(pt, tt)
    j_ref, f_ref = sequence_jf(pred, target)
    diff = max(abs(m.compute()["J"].item() - j_ref.mean()), abs(m.compute()["F"].item() - f_ref.mean()))
    return _time({"ours": ours, "davis2017 (numpy+cv2)": ref}, repeats), diff


def bench_jf_object(repeats: int) -> tuple[dict[str, tuple[float, float]], float]:
    return bench_jf(*_object_masks(np.random.default_rng(0), 100, 480, 854), repeats)


def bench_jf_scattered(repeats: int) -> tuple[dict[str, tuple[float, float]], float]:
    # Worst case for the bounding-box crop: five blobs wandering over the whole frame.
    rng = np.random.default_rng(0)
    target = blob_masks(rng, 100, 480, 854, n_blobs=3)
    pred = np.roll(target, 2, axis=1) | blob_masks(rng, 100, 480, 854, n_blobs=2)
    return bench_jf(pred, target, repeats)


def bench_ao(repeats: int) -> tuple[dict[str, tuple[float, float]], float]:
    rng = np.random.default_rng(1)
    seqs = []
    for _ in range(180):  # GOT-10k val: 180 sequences
        n = int(rng.integers(70, 150))
        target = np.stack(
            [
                rng.uniform(-20, 1200, n),
                rng.uniform(-20, 700, n),
                rng.uniform(5, 400, n),
                rng.uniform(5, 300, n),
            ],
            1,
        )
        preds = target + rng.normal(0, 20, (n, 4))
        seqs.append((preds, target, rng.random(n) > 0.1))
    tseqs = [(torch.from_numpy(p), torch.from_numpy(t), torch.from_numpy(v)) for p, t, v in seqs]

    def ours() -> dict[str, torch.Tensor]:  # one batched update of all 180 sequences
        m = AverageOverlap()
        m.update(
            [p for p, _, _ in tseqs],
            [t for _, t, _ in tseqs],
            [v for _, _, v in tseqs],
            [(1280, 720)] * len(tseqs),
        )
        return m.compute()

    def ours_per_sequence() -> dict[str, torch.Tensor]:
        m = AverageOverlap()
        for p, t, v in tseqs:
            m.update(p, t, visible=v, image_size=(1280, 720))
        return m.compute()

    def ref() -> float:
        ious = [rect_iou(p[1:].copy(), t[1:].copy(), bound=(1280, 720))[v[1:]] for p, t, v in seqs]
        ao, _, _, _ = ExperimentGOT10k._evaluate(None, np.concatenate(ious), [])  # type: ignore[arg-type]
        return float(ao)

    diff = max(abs(ours()["AO"].item() - ref()), abs(ours_per_sequence()["AO"].item() - ref()))
    per_sequence = _time({"per_sequence": ours_per_sequence}, repeats)["per_sequence"][0]
    print(f"AO/SR, 180 seqs: ours with one update per sequence {per_sequence * 1e3:.1f} ms")
    return _time({"ours": ours, "got10k": ref}, repeats), diff


def bench_ciou(repeats: int) -> tuple[dict[str, tuple[float, float]], float]:
    rng = np.random.default_rng(2)
    target = blob_masks(rng, 200, 480, 640, n_blobs=2)
    pred = blob_masks(rng, 200, 480, 640, n_blobs=2) | target
    pt, tt = torch.from_numpy(pred), torch.from_numpy(target)

    def ours() -> dict[str, torch.Tensor]:
        m = CumulativeIoU()
        for i in range(0, 200, 50):  # batches of 50 masks
            m.update(pt[i : i + 50], tt[i : i + 50])
        return m.compute()

    diff = abs(ours()["cIoU"].item() - ciou_loop(pred, target)[0])
    return _time({"ours": ours, "numpy loop": lambda: ciou_loop(pred, target)}, repeats), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch and cv2 threads (0: library default)")
    parser.add_argument("--only", default="", help="run the benchmarks whose name contains this (e.g. AO)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    print(f"torch {torch.__version__}, threads torch={torch.get_num_threads()} cv2={cv2.getNumThreads()}")
    for name, bench in (
        ("J&F, one object, 100 x 480x854", bench_jf_object),
        ("J&F, scattered blobs, 100 x 480x854", bench_jf_scattered),
        ("AO/SR, 180 seqs", bench_ao),
        ("cIoU, 200 x 480x640", bench_ciou),
    ):
        if args.only not in name:
            continue
        times, diff = bench(args.repeats)
        (ours_wall, ours_cpu) = times.pop("ours")
        ((ref_name, (ref_wall, ref_cpu)),) = times.items()
        print(
            f"{name}: ours {ours_wall * 1e3:.1f} ms (CPU {ours_cpu * 1e3:.1f}), "
            f"{ref_name} {ref_wall * 1e3:.1f} ms (CPU {ref_cpu * 1e3:.1f}), "
            f"speed-up {ref_wall / ours_wall:.2f}x wall, {ref_cpu / ours_cpu:.2f}x CPU, |diff| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
