"""J&F: DAVIS boundary rules by hand, and agreement with the numpy/cv2 DAVIS reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_reference_impls import blob_masks, db_statistics, f_measure, region_j, sequence_jf

from metrics import JAndF
from metrics.boundary import boundary_f_measure, boundary_radius, dilate_disk, disk, seg2bmap
from metrics.masks import count_bits, pack_bits
from metrics.segmentation import davis_statistics

pytestmark = pytest.mark.numerics  # rerun under a second CPU kernel set (scripts/test.sh)


def _mask(h: int, w: int, pixels: list[tuple[int, int]]) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def _f(pred: torch.Tensor, target: torch.Tensor, bound_th: float = 0.008) -> float:
    return float(boundary_f_measure(pred[None], target[None], bound_th)[0])


def _points(b: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(y), int(x)) for y, x in b.nonzero()}


# ---- boundary map ------------------------------------------------------------------------------


def test_single_interior_pixel_boundary_is_2x2_block_toward_origin() -> None:
    b = seg2bmap(_mask(5, 5, [(2, 2)]))
    assert _points(b) == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_full_mask_has_no_boundary_since_image_border_edges_do_not_count() -> None:
    assert not seg2bmap(torch.ones(4, 6, dtype=torch.bool)).any()


def test_object_touching_borders_marks_only_inner_edges() -> None:
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[:, :3] = True  # touches the left, top and bottom borders
    assert _points(seg2bmap(m)) == {(y, 2) for y in range(5)}
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[:, 4] = True  # the last column: its right edge is the image border
    assert _points(seg2bmap(m)) == {(y, 3) for y in range(5)}
    m = torch.zeros(5, 5, dtype=torch.bool)
    m[4, :] = True  # the last row
    assert _points(seg2bmap(m)) == {(3, x) for x in range(5)}


def test_pixel_in_bottom_right_corner() -> None:
    assert _points(seg2bmap(_mask(4, 4, [(3, 3)]))) == {(2, 2), (2, 3), (3, 2)}


def test_one_pixel_thin_line_boundary() -> None:
    m = torch.zeros(5, 7, dtype=torch.bool)
    m[2, 1:6] = True
    expected = {(1, x) for x in range(0, 6)} | {(2, 0), (2, 5)} | {(2, x) for x in range(1, 5)}
    assert _points(seg2bmap(m)) == expected


def test_packed_boundary_equals_per_frame_boundary() -> None:
    rng = np.random.default_rng(1)
    m = torch.from_numpy(rng.random((11, 6, 9)) < 0.4)
    packed = seg2bmap(pack_bits(m))
    for t in range(11):
        plane = (packed[t // 8] >> (t % 8)) & 1
        assert torch.equal(plane.bool(), seg2bmap(m[t]))


# ---- tolerance and disk --------------------------------------------------------------------------


def test_boundary_radius() -> None:
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.65) = ceil(7.84)
    assert boundary_radius(10, 10, 0.1) == 2  # ceil(1.414)
    assert boundary_radius(3, 4, 0.2) == 1  # 0.2 * 5 rounds to exactly 1.0 in float64
    assert boundary_radius(100, 100, 3) == 3  # >= 1 is a pixel radius
    with pytest.raises(ValueError, match="bound_th"):
        boundary_radius(10, 10, 2.5)
    with pytest.raises(ValueError, match="bound_th"):
        JAndF(bound_th=-1.0)


def test_disk_footprint() -> None:
    assert disk(1).sum() == 5  # plus sign
    assert disk(2).sum() == 13  # 5x5 without the 12 cells with dx^2 + dy^2 > 4
    assert not disk(2)[0, 1] and disk(2)[0, 2]


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8, 12])
def test_dilation_equals_sum_over_disk_offsets(radius: int) -> None:
    rng = np.random.default_rng(radius)
    m = torch.from_numpy(rng.random((3, 17, 23)) < 0.02)
    expected = torch.zeros_like(m)
    for dy, dx in disk(radius).nonzero() - radius:
        src = m[:, max(0, -dy) : 17 - max(0, dy), max(0, -dx) : 23 - max(0, dx)]
        expected[:, max(0, dy) : 17 - max(0, -dy), max(0, dx) : 23 - max(0, -dx)] |= src
    assert torch.equal(dilate_disk(m, radius), expected)


# ---- F-measure rules -----------------------------------------------------------------------------


def test_empty_rules() -> None:
    empty = torch.zeros(6, 6, dtype=torch.bool)
    blob = _mask(6, 6, [(2, 2), (2, 3), (3, 2), (3, 3)])
    full = torch.ones(6, 6, dtype=torch.bool)
    assert _f(empty, empty) == 1.0  # both boundaries empty
    assert _f(empty, blob) == 0.0 and _f(blob, empty) == 0.0  # one empty
    # A full-frame target has no boundary either: F = 1 against an empty prediction (DAVIS quirk).
    assert _f(empty, full) == 1.0
    j = JAndF()
    assert j.per_frame(empty[None], empty[None])[0].item() == 1.0  # J: both empty
    assert j.per_frame(empty[None], blob[None])[0].item() == 0.0  # J: one empty


@pytest.mark.parametrize(("dist", "expected"), [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.5), (4, 0.0)])
def test_single_pixels_apart_with_radius_2(dist: int, expected: float) -> None:
    # Boundaries are 2x2 blocks; with shift d, the nearest columns are d - 1 apart and the far ones d.
    pred = _mask(9, 12, [(4, 3)])
    target = _mask(9, 12, [(4, 3 + dist)])
    assert _f(pred, target, bound_th=2) == expected


def test_disk_not_square_tolerance() -> None:
    # Blocks offset by (3, 3): only the nearest pair is (2, 2) apart, distance^2 = 8.
    pred = _mask(12, 12, [(4, 4)])
    target = _mask(12, 12, [(7, 7)])
    assert _f(pred, target, bound_th=2) == 0.0  # 8 > 4 (a square of radius 2 would match)
    assert _f(pred, target, bound_th=3) == 0.25  # 8 <= 9: one of four pixels each way


def test_thin_lines_within_and_beyond_tolerance() -> None:
    line = torch.zeros(20, 30, dtype=torch.bool)
    line[8, 5:25] = True
    shifted = torch.roll(line, 2, dims=0)
    assert _f(line, shifted, bound_th=2) == 1.0
    # Shift 4 with radius 2: each boundary has rows r-1 and r plus two end pixels; only the
    # facing rows are within 2 (distance 3 - 1 = ... computed by hand below).
    far = torch.roll(line, 4, dims=0)
    # Each boundary is two rows, cols 4..24: pred rows 7-8, target rows 11-12. Rows 8 and 11 are
    # 3 apart and rows 7 and 12 are 4 apart from their nearest partner.
    assert _f(line, far, bound_th=2) == 0.0
    assert _f(line, far, bound_th=3) == 0.5  # half of each boundary (one row) matches


def test_sequence_means_and_j_and_f() -> None:
    empty = torch.zeros(2, 8, 8, dtype=torch.bool)
    blob = empty.clone()
    blob[:, 2:5, 2:5] = True
    half = empty.clone()
    half[0, 2:5, 2:5] = True  # frame 0 perfect, frame 1 missed
    m = JAndF()
    m.update(half, blob)  # J = (1 + 0)/2, F = (1 + 0)/2
    m.update(empty, empty)  # J = F = 1
    out = m.compute()
    assert out["J"].item() == pytest.approx(0.75, abs=1e-15)
    assert out["F"].item() == pytest.approx(0.75, abs=1e-15)
    assert out["J&F"].item() == pytest.approx(0.75, abs=1e-15)


# ---- DAVIS statistics ----------------------------------------------------------------------------


def test_davis_statistics_by_hand() -> None:
    v = torch.tensor([1.0, 0.9, 0.6, 0.4, 0.2], dtype=torch.float64)
    mean, recall, decay = davis_statistics(v).tolist()
    # bins: ids = round(linspace(1, 5, 5)) - 1 = [0, 1, 2, 3, 4]; bin0 = v[0:2], bin3 = v[3:5]
    assert mean == pytest.approx(3.1 / 5)
    assert recall == pytest.approx(3 / 5)
    assert decay == pytest.approx((1.0 + 0.9) / 2 - (0.4 + 0.2) / 2)


def test_davis_statistics_drop_first_and_last_frame() -> None:
    rng = np.random.default_rng(3)
    pred, target = blob_masks(rng, 9, 20, 24), blob_masks(rng, 9, 20, 24)
    m = JAndF(bound_th=2, davis_statistics=True)
    m.update(torch.from_numpy(pred), torch.from_numpy(target))
    out = m.compute()
    j, f = sequence_jf(pred, target, bound_th=2)
    for key, ref in zip(("J-Mean", "J-Recall", "J-Decay"), db_statistics(j[1:-1])):
        assert out[key].item() == pytest.approx(ref, abs=1e-12)
    for key, ref in zip(("F-Mean", "F-Recall", "F-Decay"), db_statistics(f[1:-1])):
        assert out[key].item() == pytest.approx(ref, abs=1e-12)
    assert out["J&F-Mean"].item() == pytest.approx((out["J-Mean"] + out["F-Mean"]).item() / 2)
    assert out["J"].item() == pytest.approx(j.mean(), abs=1e-12)  # the all-frames mean is kept
    with pytest.raises(ValueError, match="3 frames"):
        m.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 30, 101])
def test_davis_statistics_match_reference(n: int) -> None:
    v = np.random.default_rng(n).random(n)
    assert davis_statistics(torch.from_numpy(v)).tolist() == pytest.approx(db_statistics(v), abs=1e-12)


# ---- agreement with the reference ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_match_davis_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 20))
    h, w = int(rng.integers(8, 90)), int(rng.integers(8, 120))
    bound_th = [0.008, 0.05, 0.2, 1, 3, 0.5][seed]
    pred, target = blob_masks(rng, t, h, w), blob_masks(rng, t, h, w)
    j, f = JAndF(bound_th).per_frame(torch.from_numpy(pred), torch.from_numpy(target))
    j_ref, f_ref = sequence_jf(pred, target, bound_th)
    np.testing.assert_allclose(j.numpy(), j_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_noise_masks_match_davis_reference(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    t = 9
    pred = rng.random((t, h, w)) < rng.random()
    target = rng.random((t, h, w)) < rng.random()
    j, f = JAndF(bound_th=[0.1, 1, 2, 0.3][seed]).per_frame(torch.from_numpy(pred), torch.from_numpy(target))
    j_ref, f_ref = sequence_jf(pred, target, [0.1, 1, 2, 0.3][seed])
    np.testing.assert_allclose(j.numpy(), j_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=0, atol=1e-12)


def test_long_sequence_crosses_frame_blocks_and_matches_reference() -> None:
    rng = np.random.default_rng(7)
    pred, target = blob_masks(rng, 70, 24, 40), blob_masks(rng, 70, 24, 40)
    pred[5] = False  # an empty prediction frame
    m = JAndF(bound_th=0.1)
    m.update(torch.from_numpy(pred).to(torch.uint8), torch.from_numpy(target).float())  # 0/1 inputs
    j_ref, f_ref = sequence_jf(pred, target, 0.1)
    out = m.compute()
    assert out["J"].item() == pytest.approx(j_ref.mean(), abs=1e-12)
    assert out["F"].item() == pytest.approx(f_ref.mean(), abs=1e-12)


def test_blocks_without_boundaries_and_small_objects_match_reference() -> None:
    # Frames 0..17 are empty in both (a whole block has no boundary); later a small object sits
    # in one corner, so the boundary bounding box is much smaller than the frame.
    rng = np.random.default_rng(8)
    pred = np.zeros((40, 60, 90), bool)
    target = np.zeros((40, 60, 90), bool)
    target[18:] = np.pad(blob_masks(rng, 22, 20, 25), ((0, 0), (40, 0), (65, 0)))
    pred[18:] = np.roll(target[18:], 2, axis=2)
    pred[30] = False
    j, f = JAndF(bound_th=0.05).per_frame(torch.from_numpy(pred), torch.from_numpy(target))
    j_ref, f_ref = sequence_jf(pred, target, 0.05)
    np.testing.assert_allclose(j.numpy(), j_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=0, atol=1e-12)


def test_full_resolution_frames_match_reference() -> None:
    rng = np.random.default_rng(11)
    pred, target = blob_masks(rng, 2, 480, 854, n_blobs=4), blob_masks(rng, 2, 480, 854, n_blobs=4)
    j, f = JAndF().per_frame(torch.from_numpy(pred), torch.from_numpy(target))
    assert f.tolist() == pytest.approx([f_measure(pred[i], target[i]) for i in range(2)], abs=1e-12)
    assert j.tolist() == pytest.approx(region_j(pred, target).tolist(), abs=1e-12)


def test_count_bits_handles_padding_and_many_chunks() -> None:
    rng = np.random.default_rng(5)
    m = torch.from_numpy(rng.random((13, 45, 101)) < 0.5)  # 45*101 is odd and > 255*8
    assert torch.equal(count_bits(pack_bits(m))[:13], m.sum((1, 2)))
    full = torch.ones(9, 64, 64, dtype=torch.bool)  # every byte lane saturates within a chunk
    assert torch.equal(count_bits(pack_bits(full))[:9], full.sum((1, 2)))


def test_void_pixels_are_cleared_in_both_masks() -> None:
    rng = np.random.default_rng(12)
    pred, target = blob_masks(rng, 5, 30, 40), blob_masks(rng, 5, 30, 40)
    void = np.zeros_like(target)
    void[:, 10:14, :] = True  # a void band across the objects
    m = JAndF(bound_th=2)
    m.update(torch.from_numpy(pred), torch.from_numpy(target), void=torch.from_numpy(void))
    j_ref, f_ref = sequence_jf(pred & ~void, target & ~void, 2)  # davis2017: mask * ~void
    assert m.compute()["J"].item() == pytest.approx(j_ref.mean(), abs=1e-12)
    assert m.compute()["F"].item() == pytest.approx(f_ref.mean(), abs=1e-12)
    j_plain, _ = sequence_jf(pred, target, 2)
    assert j_plain.mean() != pytest.approx(j_ref.mean())  # the band matters
    with pytest.raises(ValueError, match="`void`"):
        m.update(torch.from_numpy(pred), torch.from_numpy(target), void=torch.zeros(5, 30, 41))


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_shapes_raise() -> None:
    m = JAndF()
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="`target`"):
        m.update(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="`preds`"):
        m.update([[0]], torch.zeros(1, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite"):
        m.update(torch.full((1, 4, 4), float("nan")), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="at least one frame"):
        m.update(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(9)
    pred, target = (
        torch.from_numpy(blob_masks(rng, 12, 60, 80)),
        torch.from_numpy(blob_masks(rng, 12, 60, 80)),
    )
    cpu, gpu = JAndF(), JAndF().cuda()
    cpu.update(pred, target)
    gpu.update(pred.cuda(), target.cuda())
    for k, v in cpu.compute().items():
        assert gpu.compute()[k].item() == pytest.approx(v.item(), abs=1e-12)
