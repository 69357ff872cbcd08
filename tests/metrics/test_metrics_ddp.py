"""DDP: a 2-process gloo group on CPU gives the same numbers as one process."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from metrics_reference_impls import blob_masks

from metrics import AverageOverlap, BoxGroundingAccuracy, CumulativeIoU, JAndF, TemporalGroundingRecall

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

NAN = float("nan")


def _data() -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Per-update inputs for every metric (odd counts, so the ranks get unequal shares)."""
    rng = np.random.default_rng(0)
    masks = [
        (torch.from_numpy(blob_masks(rng, 4, 20, 30)), torch.from_numpy(blob_masks(rng, 4, 20, 30)))
        for _ in range(5)
    ]
    boxes = []
    for _ in range(5):
        t = torch.from_numpy(rng.uniform(0, 50, (9, 4)))
        p = t + torch.from_numpy(rng.normal(0, 5, (9, 4)))
        p[2] = NAN
        boxes.append((p, t, torch.from_numpy(rng.random(9) > 0.2)))
    spans = []
    for _ in range(3):
        t = torch.from_numpy(np.sort(rng.uniform(0, 30, (7, 2)), 1))
        spans.append((t + torch.from_numpy(rng.normal(0, 3, (7, 2))), t))
    return {"masks": masks, "boxes": boxes, "spans": spans}


def _metrics() -> dict[str, torch.nn.Module]:
    return {
        "ciou": CumulativeIoU(),
        "jf": JAndF(bound_th=0.1, davis_statistics=True),
        "ao": AverageOverlap(),
        "ao_ot": AverageOverlap(protocol="onethinker"),
        "tg": TemporalGroundingRecall(),
        "box": BoxGroundingAccuracy(box_format="xywh"),
    }


def _run(rank: int, world: int) -> dict[str, dict[str, float]]:
    data, ms = _data(), _metrics()
    for i, (p, t) in enumerate(data["masks"]):
        if i % world == rank:
            ms["ciou"].update(p, t)
            ms["jf"].update(p, t)
    for i, (p, t, v) in enumerate(data["boxes"]):
        if i % world == rank:
            ms["ao"].update(p, t, visible=v, image_size=(45, 40))
            ms["ao_ot"].update(p, t, visible=v)
            ms["box"].update(p, t)
    for i, (p, t) in enumerate(data["spans"]):
        if i % world == rank:
            ms["tg"].update(p, t)
    out = {name: {k: v.item() for k, v in m.compute().items()} for name, m in ms.items()}
    out["nan"] = {name: float(ms[name].nan_predictions().item()) for name in ("ao", "ao_ot", "box", "tg")}
    return out


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        torch.save(_run(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    single = _run(0, 1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        assert synced.keys() == single.keys()
        for name, values in single.items():
            assert synced[name].keys() == values.keys()
            for key, v in values.items():
                assert synced[name][key] == pytest.approx(v, abs=1e-12), (rank, name, key)
