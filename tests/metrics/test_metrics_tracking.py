"""AverageOverlap: GOT-10k rules by hand, agreement with the got10k toolkit, OneThinker protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from got10k.experiments import ExperimentGOT10k
from got10k.utils.metrics import rect_iou
from metrics_reference_impls import onethinker_box_iou

from metrics import AverageOverlap

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)

NAN = float("nan")


def _ao(preds: list[list[float]], target: list[list[float]], **kw: object) -> dict[str, float]:
    m = AverageOverlap()
    m.update(torch.tensor(preds, dtype=torch.float64), torch.tensor(target, dtype=torch.float64), **kw)
    return {k: v.item() for k, v in m.compute().items()}


def test_frame_zero_is_dropped() -> None:
    # Frame 0 would score 0; only frame 1 (IoU 1) counts.
    out = _ao([[50, 50, 1, 1], [0, 0, 4, 4]], [[0, 0, 4, 4], [0, 0, 4, 4]])
    assert out == {"AO": 1.0, "SR@0.5": 1.0, "SR@0.75": 1.0}


def test_invisible_frames_are_dropped() -> None:
    preds = [[0, 0, 4, 4], [0, 0, 4, 4], [9, 9, 1, 1], [0, 0, 2, 4]]
    target = [[0, 0, 4, 4]] * 4
    out = _ao(preds, target, visible=torch.tensor([True, True, False, True]))
    assert out["AO"] == pytest.approx(0.75)  # frames 1 (IoU 1) and 3 (IoU 0.5)
    assert out["SR@0.5"] == 0.5  # 0.5 is not > 0.5


def test_success_rate_is_strict_at_the_threshold() -> None:
    # IoU exactly 0.5 and exactly 0.75 (8/(16+eps) rounds to 0.5 exactly in float64).
    preds = [[0, 0, 4, 4], [0, 0, 2, 4], [0, 0, 3, 4]]
    target = [[0, 0, 4, 4]] * 3
    out = _ao(preds, target)
    assert out["SR@0.5"] == 0.5  # only the 0.75 frame
    assert out["SR@0.75"] == 0.0  # 0.75 is not > 0.75
    assert out["AO"] == pytest.approx(0.625)


def test_clipping_quirk_moves_rather_than_crops() -> None:
    # pred covers x in [-5, 5] in an 8 x 10 (W x H) image. The toolkit clips x to 0 and then w to
    # W - x = 8, so the box becomes [0, 8]: IoU 40 / 80 = 0.5 with target [0, 4].
    # A true crop ([0, 5]) would give 40 / 50 = 0.8, and no clipping 40 / 100 = 0.4.
    preds = [[0, 0, 4, 10], [-5, 0, 10, 10]]
    target = [[0, 0, 4, 10], [0, 0, 4, 10]]
    assert _ao(preds, target, image_size=(8, 10))["AO"] == 0.5
    assert _ao(preds, target)["AO"] == pytest.approx(0.4)
    # Width is clipped against the clipped x: x = 8, w = 5 in a width-10 image becomes w = 2.
    preds = [[0, 0, 1, 1], [8, 0, 5, 10]]
    target = [[0, 0, 1, 1], [8, 0, 2, 10]]
    assert _ao(preds, target, image_size=(10, 10))["AO"] == 1.0
    assert _ao(preds, target)["AO"] == pytest.approx(0.4)
    # The target is clipped the same way (here it is the box that sticks out at the top).
    preds = [[0, 0, 1, 1], [0, 0, 4, 4]]
    target = [[0, 0, 1, 1], [0, -2, 4, 4]]
    assert _ao(preds, target, image_size=(10, 10))["AO"] == 1.0


def test_box_outside_image_and_zero_area_score_zero() -> None:
    preds = [[0, 0, 1, 1], [15, 2, 3, 3], [2, 2, 0, 3], [2, 2, 0, 0]]
    target = [[0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3], [2, 2, 0, 0]]
    m = AverageOverlap()
    m.update(torch.tensor(preds), torch.tensor(target), image_size=(10, 10))
    assert m.compute()["AO"].item() == 0.0  # off-image -> zero width; zero area; both zero-area


def test_frames_are_pooled_over_sequences() -> None:
    m = AverageOverlap()
    box = [0.0, 0.0, 4.0, 4.0]
    m.update(torch.tensor([box, box]), torch.tensor([box, box]))  # one scored frame, IoU 1
    m.update(torch.tensor([box, [9, 9, 1, 1], [9, 9, 1, 1], [9, 9, 1, 1]]), torch.tensor([box] * 4))  # 3 x 0
    out = m.compute()
    assert out["AO"].item() == 0.25  # pooled (1 + 0 + 0 + 0) / 4, not (1 + 0) / 2
    assert out["SR@0.5"].item() == 0.25


def test_nan_prediction_scores_zero_and_is_counted() -> None:
    m = AverageOverlap()
    box = [0.0, 0.0, 4.0, 4.0]
    m.update(torch.tensor([[NAN] * 4, box, [NAN, 0, 1, 1]]), torch.tensor([box] * 3))
    assert m.compute()["AO"].item() == 0.5
    assert m.nan_predictions().item() == 1  # frame 0 is not scored


def test_xyxy_input() -> None:
    m = AverageOverlap(box_format="xyxy")
    m.update(torch.tensor([[0, 0, 4, 4], [0, 0, 2, 4]]), torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]]))
    assert m.compute()["AO"].item() == 0.5


def test_bad_input_raises() -> None:
    m = AverageOverlap()
    box = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="`preds`"):
        m.update(torch.zeros(3, 3), box)
    with pytest.raises(ValueError, match="`target`"):
        m.update(box, torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(2, 4), box)
    with pytest.raises(ValueError, match="`target`.*non-finite"):
        m.update(box, torch.tensor([[0, 0, 1, 1], [0, 0, 1, NAN], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="`target`.*non-finite"):
        m.update(box, torch.tensor([[0, 0, 1, 1], [0, 0, 1, float("inf")], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="`preds`.*infinite"):
        m.update(torch.tensor([[0, 0, 1, float("-inf")]] * 3), box)
    with pytest.raises(ValueError, match="`visible`"):
        m.update(box, box, visible=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="`image_size`"):
        m.update(box, box, image_size=(0, 10))
    with pytest.raises(ValueError, match="`target`"):
        m.update(torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="protocol"):
        AverageOverlap(protocol="vot")
    with pytest.raises(ValueError, match="box_format"):
        AverageOverlap(box_format="cxcywh")
    with pytest.raises(ValueError, match="thresholds"):
        AverageOverlap(thresholds=(1.5,))


def _random_sequence(rng: np.random.Generator, n: int, w: float, h: float) -> tuple[np.ndarray, ...]:
    target = np.stack(
        [rng.uniform(-20, w, n), rng.uniform(-20, h, n), rng.uniform(0, w / 2, n), rng.uniform(0, h / 2, n)],
        1,
    )
    preds = target + rng.normal(0, 15, (n, 4))
    preds[rng.random(n) < 0.1, 2] = 0.0  # zero-area predictions
    visible = rng.random(n) > 0.2
    return preds, target, visible


def test_matches_got10k_toolkit_on_random_sequences() -> None:
    rng = np.random.default_rng(0)
    m = AverageOverlap(thresholds=(0.5, 0.75, 0.3))
    all_ious = []
    for _ in range(12):
        n = int(rng.integers(2, 60))
        w, h = float(rng.integers(50, 400)), float(rng.integers(50, 400))
        preds, target, visible = _random_sequence(rng, n, w, h)
        bound = (w, h) if rng.random() < 0.8 else None
        m.update(
            torch.from_numpy(preds),
            torch.from_numpy(target),
            visible=torch.from_numpy(visible),
            image_size=bound,
        )
        # The toolkit's report(): rect_iou on frames 1.. (it clips in place, so pass copies),
        # then keep frames whose cover is > 0.
        ious = rect_iou(preds[1:].copy(), target[1:].copy(), bound=bound)
        all_ious.append(ious[visible[1:]])
    ious = np.concatenate(all_ious)
    ao, sr, _, _ = ExperimentGOT10k._evaluate(None, ious, [])  # type: ignore[arg-type]
    out = m.compute()
    assert out["AO"].item() == pytest.approx(ao, abs=1e-12)
    assert out["SR@0.5"].item() == pytest.approx(sr, abs=1e-12)
    assert out["SR@0.75"].item() == pytest.approx(np.mean(ious > 0.75), abs=1e-12)
    assert out["SR@0.3"].item() == pytest.approx(np.mean(ious > 0.3), abs=1e-12)


# ---- OneThinker protocol -------------------------------------------------------------------------


def test_onethinker_protocol_by_hand() -> None:
    m = AverageOverlap(box_format="xyxy", protocol="onethinker", thresholds=(0.5, 0.75))
    box = [0.0, 0.0, 4.0, 4.0]
    m.update(torch.tensor([box, [0, 0, 2, 4]]), torch.tensor([box, box]))  # frame 0 counts: (1 + 0.5)/2
    m.update(torch.tensor([[0, 0, 2, 4], [NAN] * 4]), torch.tensor([box, box]))  # (0.5 + 0) / 2
    out = {k: v.item() for k, v in m.compute().items()}
    assert out == {"AO": 0.5, "R@0.5": 0.5, "R@0.75": 0.5}  # 0.75 >= 0.75 counts (not strict)
    assert m.nan_predictions().item() == 1
    with pytest.raises(ValueError, match="image_size"):
        m.update(torch.tensor([box]), torch.tensor([box]), image_size=(10, 10))


def test_onethinker_protocol_matches_python_reference() -> None:
    rng = np.random.default_rng(1)
    m = AverageOverlap(box_format="xyxy", protocol="onethinker", thresholds=(0.3, 0.5, 0.7))
    means = []
    for _ in range(20):
        n = int(rng.integers(1, 33))
        target = np.sort(rng.uniform(0, 100, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]]
        preds = target + rng.normal(0, 8, (n, 4))
        m.update(torch.from_numpy(preds), torch.from_numpy(target))
        means.append(np.mean([onethinker_box_iou(list(p), list(t)) for p, t in zip(preds, target)]))
    means = np.array(means)
    out = m.compute()
    assert out["AO"].item() == pytest.approx(means.mean(), abs=1e-12)
    for t in (0.3, 0.5, 0.7):
        assert out[f"R@{t}"].item() == pytest.approx(np.mean(means >= t), abs=1e-12)


@pytest.mark.parametrize("protocol", ["got10k", "onethinker"])
def test_one_batched_update_equals_one_update_per_sequence(protocol: str) -> None:
    """Sequences of different lengths and image sizes (some unbounded), NaN predictions and hidden
    frames: one `update` with lists gives the same AO, success rates and NaN count as one `update` each, and
    (got10k) the toolkit's values."""
    rng = np.random.default_rng(3)
    seqs = []
    for i in range(20):
        n = int(rng.integers(1 if protocol == "onethinker" else 2, 40))
        w, h = float(rng.integers(50, 400)), float(rng.integers(50, 400))
        preds, target, visible = _random_sequence(rng, n, w, h)
        preds[rng.random(n) < 0.05] = np.nan
        bound = (w, h) if protocol == "got10k" and i % 3 else None
        seqs.append((torch.from_numpy(preds), torch.from_numpy(target), torch.from_numpy(visible), bound))
    one_by_one, batched = AverageOverlap(protocol=protocol), AverageOverlap(protocol=protocol)
    for p, t, v, b in seqs:
        one_by_one.update(p, t, visible=v, image_size=b)
    batched.update([s[0] for s in seqs], [s[1] for s in seqs], [s[2] for s in seqs], [s[3] for s in seqs])
    want, got = one_by_one.compute(), batched.compute()
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].item() == pytest.approx(want[key].item(), abs=1e-12), key
    assert batched.nan_predictions() == one_by_one.nan_predictions() > 0
    if protocol == "got10k":
        ious = [
            np.nan_to_num(rect_iou(np.nan_to_num(p.numpy()[1:]), t.numpy()[1:].copy(), bound=b), nan=0.0)[
                v.numpy()[1:]
            ]
            for p, t, v, b in seqs
        ]
        ao, sr, _, _ = ExperimentGOT10k._evaluate(None, np.concatenate(ious), [])  # type: ignore[arg-type]
        assert got["AO"].item() == pytest.approx(ao, abs=1e-12) and got["SR@0.5"].item() == pytest.approx(
            sr, abs=1e-12
        )


def test_batched_update_needs_aligned_lists() -> None:
    m = AverageOverlap()
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="same number of sequences"):
        m.update([box, box], [box])
    with pytest.raises(ValueError, match="same shape"):
        m.update([box], [box[:1]])
