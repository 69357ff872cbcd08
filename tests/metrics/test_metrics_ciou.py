"""cIoU / gIoU: hand-computed cases and a numpy-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_reference_impls import blob_masks, ciou_loop

from metrics import CumulativeIoU

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)


def test_hand_computed_two_samples() -> None:
    pred = torch.zeros(2, 3, 3, dtype=torch.bool)
    target = torch.zeros(2, 3, 3, dtype=torch.bool)
    pred[0, 0, :3] = True  # 3 pixels
    target[0, 0, 1:3] = True
    target[0, 1, 0] = True  # inter 2, union 4; sample 1 is empty/empty
    m = CumulativeIoU()
    m.update(pred, target)
    out = m.compute()
    assert out["cIoU"].item() == 0.5  # 2 / 4: the empty sample adds nothing to the sums
    assert out["gIoU"].item() == 0.75  # (0.5 + 1) / 2


def test_single_masks_and_01_inputs_accumulate() -> None:
    m = CumulativeIoU()
    a = torch.tensor([[1, 1], [0, 0]])
    b = torch.tensor([[1, 0], [0, 0]])
    m.update(a, b)  # 1 / 2
    m.update(b.float(), torch.zeros(2, 2))  # 0 / 1
    out = m.compute()
    assert out["cIoU"].item() == pytest.approx(1 / 3)
    assert out["gIoU"].item() == pytest.approx(0.25)


def test_all_empty_gives_ciou_zero_giou_one() -> None:
    m = CumulativeIoU()
    m.update(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    assert m.compute()["cIoU"].item() == 0.0
    assert m.compute()["gIoU"].item() == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_matches_numpy_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, h, w = 21, int(rng.integers(5, 70)), int(rng.integers(5, 70))
    pred, target = blob_masks(rng, n, h, w), blob_masks(rng, n, h, w)
    pred[3] = target[3] = False
    m = CumulativeIoU()
    m.update(torch.from_numpy(pred[:10]), torch.from_numpy(target[:10]))
    m.update(torch.from_numpy(pred[10:]), torch.from_numpy(target[10:]))
    ciou, giou = ciou_loop(pred, target)
    out = m.compute()
    assert out["cIoU"].item() == pytest.approx(ciou, abs=1e-12)
    assert out["gIoU"].item() == pytest.approx(giou, abs=1e-12)


def test_bad_input_raises() -> None:
    m = CumulativeIoU()
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match="`target`"):
        m.update(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="`target`"):
        m.update(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3))
