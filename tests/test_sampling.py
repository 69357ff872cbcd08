"""Mixed-task sampling: hand-computed shares, determinism, disjoint ranks, exact resume."""

from __future__ import annotations

from types import SimpleNamespace as R

import numpy as np
import pytest

from datamodules.sampling import MixedTaskSampler, sampling_probabilities


def recs(*spec: tuple[str, str, str, int]) -> list[R]:
    out = []
    for problem_type, data_type, source, n in spec:
        out += [R(problem_type=problem_type, data_type=data_type, data_source=source) for _ in range(n)]
    return out


def test_natural_proportions_by_default():
    p = sampling_probabilities(recs(("numerical", "image", "a", 3), ("tracking", "video", "b", 1)))
    np.testing.assert_allclose(p, [0.25] * 4)


def test_image_video_balance():
    p = sampling_probabilities(
        recs(("numerical", "image", "a", 3), ("tracking", "video", "b", 1)),
        {"data_type": {"image": 1, "video": 1}},
    )
    np.testing.assert_allclose(p, [1 / 6, 1 / 6, 1 / 6, 1 / 2])


def test_temperature_flattens_sizes():
    # cells of 9 and 1 records: masses 9**0.5 = 3 and 1, so shares 3/4 and 1/4
    p = sampling_probabilities(
        recs(("numerical", "image", "a", 9), ("OCR", "image", "a", 1)), temperature=2.0
    )
    np.testing.assert_allclose(p[:9].sum(), 0.75)
    np.testing.assert_allclose(p[9], 0.25)


def test_two_dimensions_raked_to_both_marginals():
    records = recs(
        ("numerical", "image", "a", 2), ("numerical", "video", "a", 6), ("tracking", "video", "b", 2)
    )
    p = sampling_probabilities(
        records, {"problem_type": {"numerical": 3, "tracking": 1}, "data_type": {"image": 1, "video": 1}}
    )
    types = np.array([r.problem_type for r in records])
    modality = np.array([r.data_type for r in records])
    np.testing.assert_allclose(p[types == "numerical"].sum(), 0.75, atol=1e-9)
    np.testing.assert_allclose(p[modality == "image"].sum(), 0.5, atol=1e-9)


def test_mix_group_weights():
    records = recs(("numerical", "image", "a", 1), ("math", "image", "a", 3), ("open-ended", "video", "a", 4))
    p = sampling_probabilities(
        records, {"mix_group": {"rule-based QA": 0.55, "open-ended QA and captions": 0.13}}
    )
    np.testing.assert_allclose(p[:4].sum(), 0.55 / 0.68)
    np.testing.assert_allclose(p[0], 0.55 / 0.68 / 4)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"data_type": {"image": 1}}, "no entry for \\['video'\\]"),
        ({"colour": {"red": 1}}, "unknown weight dimension"),
        ({"data_type": {"image": 0, "video": 0}}, "positive sum"),
    ],
)
def test_bad_weights(weights: dict, message: str):
    with pytest.raises(ValueError, match=message):
        sampling_probabilities(recs(("numerical", "image", "a", 1), ("tracking", "video", "a", 1)), weights)


def test_sampler_empirical_shares_and_determinism():
    p = np.array([0.7, 0.2, 0.1])
    a = [i for _, _, i in MixedTaskSampler(p, 20000, seed=3)]
    b = [i for _, _, i in MixedTaskSampler(p, 20000, seed=3)]
    assert a == b
    assert a != [i for _, _, i in MixedTaskSampler(p, 20000, seed=4)]
    np.testing.assert_allclose(np.bincount(a) / len(a), p, atol=0.015)


def test_ranks_read_disjoint_positions_of_one_stream():
    p = np.full(50, 1 / 50)
    whole = [i for _, _, i in MixedTaskSampler(p, 80, seed=1)]
    r0 = [i for _, _, i in MixedTaskSampler(p, 40, seed=1, rank=0, world_size=2)]
    r1 = [i for _, _, i in MixedTaskSampler(p, 40, seed=1, rank=1, world_size=2)]
    assert r0 == whole[0::2] and r1 == whole[1::2] and r0 != r1


def test_resume_continues_the_same_sequence():
    p = np.array([0.5, 0.3, 0.2])
    reference = MixedTaskSampler(p, 10, seed=5)
    flat = list(reference)
    reference.set_epoch(1)
    flat += list(reference)

    first = MixedTaskSampler(p, 10, seed=5)
    seen = []
    for key in first:
        seen.append(key)
        first.consumed(key[0], key[1])
        if len(seen) == 7:
            break
    state = first.state_dict()
    assert state == {"epoch": 0, "start": 7}

    resumed = MixedTaskSampler(p, 10, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == 10  # the epoch's length, not what is left of it (Lightning sizes epochs by it)
    seen += list(resumed)
    resumed.set_epoch(1)
    seen += list(resumed)
    assert seen == flat
    assert [k[:2] for k in seen[:12]] == [(0, i) for i in range(10)] + [(1, 0), (1, 1)]
